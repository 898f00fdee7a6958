"""Keras 3 ``.keras`` archives and legacy Keras 2 ``.h5`` files.

Both end up as a Keras 3 model object, because the converter re-exports Keras models with an explicit
batch-1 input signature (``from_keras_model`` would leave a dynamic batch). Legacy H5 files written by
Keras 2 often carry config keys Keras 3 no longer accepts (``DepthwiseConv2D(groups=1)``); those are
dropped through look-alike subclasses rather than by editing the file, which we never touch.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..atomic import scratch_dir
from ..errors import InputModelError
from .model import SourceModel, TensorSpec
from .precheck import check_hdf5_file, keras_archive_config
from .shapes import RawShape, first_line, output_spec, resolve_inputs

log = logging.getLogger(__name__)

#: How many distinct "Unrecognized keyword arguments" errors we fix before giving up; real Keras 2
#: files need one or two, a loop beyond this means the fix is not converging.
_MAX_COMPAT_ROUNDS = 12

_UNRECOGNIZED = re.compile(r"Unrecognized keyword arguments passed to (\w+): (\{.*?\})(?:\s|$)", re.DOTALL)

UNSAFE_NOTE = (
    "Loaded with --unsafe: Keras safe mode was off, so Python code stored in the file (Lambda layers) "
    "was allowed to run. Only do this for files you trust."
)


def load_keras_archive(path: Path, *, input_shape: tuple[int, ...] | None, unsafe: bool) -> SourceModel:
    """Load a Keras 3 ``.keras`` zip with safe mode on unless the user lifted it."""
    config = keras_archive_config(path)  # refuse a bad file before paying for the Keras/TF import

    import keras

    from ..compress import qat_layers  # noqa: F401  (registers the layers of QAT models edgeport wrote)

    with _captured_warnings() as caught:
        try:
            model = keras.saving.load_model(path, safe_mode=not unsafe, compile=False)
        except Exception as exc:
            raise _keras_load_error(path, exc, config, unsafe=unsafe) from exc
    notes = [UNSAFE_NOTE] if unsafe else []
    notes += caught
    return _source(path, "keras", f"keras.saving.load_model(safe_mode={not unsafe})", model, input_shape, notes)


def load_h5(path: Path, *, input_shape: tuple[int, ...] | None, unsafe: bool) -> SourceModel:
    """Load a legacy Keras 2 HDF5 model, dropping config keys Keras 3 refuses."""
    config = _h5_config(path)
    stripped: list[str] = []
    with _captured_warnings() as caught, scratch_dir("edgeport-h5-") as work:
        try:
            readable = path
            if _has_pruning_wrappers(config):  # tfmot-pruned file saved without strip_pruning
                readable, stripped = _strip_pruning_wrappers(path, config, work / "stripped.h5")
            model, dropped = _load_h5_with_compat(readable, unsafe=unsafe)
        except Exception as exc:
            raise _keras_load_error(path, exc, config, unsafe=unsafe) from exc
    notes = [UNSAFE_NOTE] if unsafe else []
    if stripped:
        notes.append(
            f"tfmot pruning wrappers (prune_low_magnitude) stripped on load from {len(stripped)} layers; "
            "their masks were applied to the kernels, so the pruned zeros are kept."
        )
    loader = "keras (legacy H5"
    if dropped:
        what = ", ".join(f"{cls}.{key}" for cls, keys in sorted(dropped.items()) for key in sorted(keys))
        values = ", ".join(
            f"{cls}.{key}={value}" for cls, keys in sorted(dropped.items()) for key, value in sorted(keys.items())
        )
        loader += f", compat: dropped {what}"
        notes.append(
            f"Keras 2 file: Keras 3 rejects the config keys {values}; they were dropped on load "
            "(check the float model's outputs if a dropped value is not the Keras 3 default)."
        )
    if unsafe:
        loader += ", unsafe"
    loader += ")"
    notes += caught
    return _source(path, "h5", loader, model, input_shape, notes)


# --- reading the files without running them ---------------------------------------------------------


def _h5_config(path: Path) -> Any:
    """The model config of a Keras H5 file; refuses non-HDF5, truncated and weights-only files."""
    check_hdf5_file(path)  # signature and truncation, from the header alone
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as exc:
        raise InputModelError(
            f"HDF5 file {path} cannot be read ({first_line(exc)}).",
            hint="Copy or download the file again (it may be damaged), or re-save it with model.save('model.keras').",
        ) from exc
    if raw is None:
        raise InputModelError(
            f"HDF5 file {path} holds only weights (no model config), so the architecture is unknown.",
            hint="Save the whole model with model.save('model.keras') (or model.save('model.h5')) and pass that file.",
        )
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except ValueError as exc:
        raise InputModelError(
            f"HDF5 file {path} has a model config that is not valid JSON ({first_line(exc)}).",
            hint="Re-save the model with model.save('model.keras') and pass that file.",
        ) from exc


def _lambda_layer_names(config: Any) -> list[str]:
    """Names of every Lambda layer in a (possibly nested) Keras config, to name them in the error."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                inner = node.get("config")
                name = inner.get("name") if isinstance(inner, dict) else None
                names.append(str(name or node.get("name") or "?"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(dict.fromkeys(names))


def _keras_load_error(path: Path, exc: Exception, config: Any, *, unsafe: bool) -> InputModelError:
    """One readable line for whatever Keras raised."""
    if isinstance(exc, InputModelError):
        return exc
    text = str(exc)
    if not unsafe and ("arbitrary code execution" in text or "safe_mode" in text):
        lambdas = _lambda_layer_names(config)
        what = (
            f"Lambda layer{'s' if len(lambdas) > 1 else ''} {', '.join(repr(n) for n in lambdas)}"
            if lambdas
            else "a layer with Python code"
        )
        return InputModelError(
            f"Model {path} contains {what}, whose Python code Keras safe mode refuses to load.",
            hint="If you trust the file, pass --unsafe to allow its code to run.",
        )
    return InputModelError(
        f"Keras could not load {path}: {first_line(exc)}",
        hint="Check the file was saved with Keras (model.save) and loads in keras.saving.load_model().",
    )


# --- tfmot pruning wrappers ----------------------------------------------------------------------------

_PRUNE_WRAPPER = "PruneLowMagnitude"
_WRAPPER_STATE = ("/mask:", "/threshold:", "/pruning_step:")


def _has_pruning_wrappers(config: Any) -> bool:
    return _PRUNE_WRAPPER in json.dumps(config)


def _strip_pruning_wrappers(path: Path, config: Any, out: Path) -> tuple[Path, list[str]]:
    """A copy of the H5 file with every ``PruneLowMagnitude`` wrapper replaced by the layer it wraps.

    The config gets the inner layer (and its name, wherever the wrapper's name was referenced); the
    weights group of each wrapper becomes the inner layer's, with kernel * mask and without the
    wrapper's own state (mask, threshold, pruning_step). The user's file is never touched.
    """
    import shutil

    import h5py
    import numpy as np

    renames: dict[str, str] = {}

    def unwrap(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == _PRUNE_WRAPPER and isinstance(node.get("config"), dict):
                inner = node["config"].get("layer") or {}
                outer = node["config"].get("name")
                inner_name = (inner.get("config") or {}).get("name")
                if outer and inner_name:
                    renames[outer] = inner_name
                result = unwrap(inner)
                for key in ("inbound_nodes", "name"):
                    if key in node and key not in result:
                        result[key] = node[key]
                return result
            return {k: unwrap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [unwrap(v) for v in node]
        return node

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return renames.get(node, node) if isinstance(node, str) else node

    new_config = rename(unwrap(config))
    shutil.copyfile(path, out)
    with h5py.File(out, "r+") as handle:
        handle.attrs["model_config"] = json.dumps(new_config).encode("utf-8")
        weights = handle["model_weights"] if "model_weights" in handle else handle
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in weights.attrs["layer_names"]]
        for outer in names:
            inner = renames.get(outer)
            if inner is None:
                continue
            group = weights[outer]
            wnames = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
            masks = [np.asarray(group[n]) for n in wnames if "/mask:" in n]
            kept = {n: np.asarray(group[n]) for n in wnames if not any(s in n for s in _WRAPPER_STATE)}
            for name, value in kept.items():
                for mask in masks:
                    if name.endswith("kernel:0") and mask.shape == value.shape:
                        kept[name] = value * mask
            del weights[outer]
            target = weights.create_group(inner)
            for name, value in kept.items():
                target.create_dataset(name, data=value)
            target.attrs["weight_names"] = [n.encode("utf-8") for n in kept]
        weights.attrs["layer_names"] = [renames.get(n, n).encode("utf-8") for n in names]
    return out, sorted(renames.values())


# --- the Keras 2 compatibility path -------------------------------------------------------------------


def _load_h5_with_compat(path: Path, *, unsafe: bool) -> tuple[Any, dict[str, dict[str, str]]]:
    """Load, and on each "Unrecognized keyword arguments" error retry with that key dropped.

    Only keys Keras 3 actually rejects are dropped (nothing is guessed up front), so a file that
    loads as-is is loaded exactly as Keras would.
    """
    import keras

    dropped: dict[str, dict[str, str]] = {}
    for _ in range(_MAX_COMPAT_ROUNDS):
        try:
            model = keras.saving.load_model(
                path, compile=False, safe_mode=not unsafe, custom_objects=_compat_objects(dropped)
            )
            return model, dropped
        except Exception as exc:
            found = _unrecognized_kwargs(exc)
            if found is None:
                raise
            cls_name, keys = found
            if not hasattr(keras.layers, cls_name) or keys.keys() <= dropped.get(cls_name, {}).keys():
                raise
            log.info("Keras 2 compat: dropping %s from %s configs", sorted(keys), cls_name)
            dropped.setdefault(cls_name, {}).update(keys)
    raise InputModelError(f"Keras could not load {path}: too many config keys Keras 3 rejects.")


def _unrecognized_kwargs(exc: BaseException) -> tuple[str, dict[str, str]] | None:
    """(class name, {rejected key: value as written}) from Keras' "Unrecognized keyword arguments"."""
    match = _UNRECOGNIZED.search(str(exc))
    if not match:
        return None
    try:
        keys = {str(k): repr(v) for k, v in ast.literal_eval(match.group(2)).items()}
    except (ValueError, SyntaxError, AttributeError):
        keys = {k: "?" for k in re.findall(r"'(\w+)'\s*:", match.group(2))}
    return (match.group(1), keys) if keys else None


def _compat_objects(dropped: dict[str, dict[str, str]]) -> dict[str, type]:
    import keras

    return {name: _dropping_subclass(getattr(keras.layers, name), frozenset(keys)) for name, keys in dropped.items()}


def _dropping_subclass(base: type, keys: frozenset[str]) -> type:
    """A subclass that reads like ``base`` (same class name) but ignores ``keys`` in its config."""

    class Compat(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_config(cls, config: dict[str, Any]) -> Any:
            return super().from_config({k: v for k, v in config.items() if k not in keys})

    Compat.__name__ = Compat.__qualname__ = base.__name__
    return Compat


# --- describing the loaded model ---------------------------------------------------------------------


class _captured_warnings:
    """Collect Keras' load-time warnings (e.g. weights it skipped) as notes the user will see."""

    def __enter__(self) -> list[str]:
        self._ctx = warnings.catch_warnings(record=True)
        self._records = self._ctx.__enter__()
        warnings.simplefilter("always")
        self.notes: list[str] = []
        return self.notes

    def __exit__(self, *exc_info: Any) -> None:
        records = list(self._records)
        self._ctx.__exit__(*exc_info)
        for record in records:
            if issubclass(record.category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
                continue
            line = first_line(Warning(str(record.message)))
            note = f"Keras warned while loading: {line}"
            if note not in self.notes:
                self.notes.append(note)


def _source(
    path: Path, fmt: str, loader: str, model: Any, input_shape: tuple[int, ...] | None, notes: list[str]
) -> SourceModel:
    inputs, outputs, shape_notes = describe_keras_model(model, input_shape)
    return SourceModel(
        path=path,
        format=fmt,
        loader=loader,
        inputs=inputs,
        outputs=outputs,
        keras_model=model,
        layers=layer_map(model),
        notes=notes + shape_notes,
    )


def describe_keras_model(
    model: Any, input_shape: tuple[int, ...] | None
) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    """Static batch-1 input specs and the output specs they give."""
    import keras

    declared = _declared_inputs(model)
    inputs, notes = resolve_inputs(declared, input_shape)
    symbolic = [keras.KerasTensor(spec.shape, dtype=spec.dtype) for spec in inputs]
    try:
        result = model.compute_output_spec(_as_model_inputs(model, symbolic))
        flat = keras.tree.flatten(result)
    except Exception as exc:  # a model that cannot run on these shapes: the converter will say why
        log.debug("compute_output_spec failed: %s", exc)
        flat = list(getattr(model, "outputs", None) or [])
    names = _output_names(model, len(flat))
    outputs = [output_spec(n, tuple(t.shape), str(t.dtype)) for n, t in zip(names, flat, strict=True)]
    return inputs, outputs, notes


def _output_names(model: Any, count: int) -> list[str]:
    """Keras' own output names, else the layers producing the outputs (Sequential has no output_names)."""
    try:
        names = [str(n) for n in (getattr(model, "output_names", None) or [])]
        if len(names) == count:
            return names
        names = [t._keras_history.operation.name for t in (getattr(model, "outputs", None) or [])]
        if len(names) == count:
            return names
    except (AttributeError, ValueError):
        pass
    return [f"output_{i}" for i in range(count)]


def _as_model_inputs(model: Any, tensors: list[Any]) -> Any:
    """Tensors in the structure the model was built with (Keras 2 files use a one-element list)."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if struct is not None:
        try:
            return keras.tree.pack_sequence_as(struct, tensors)
        except (ValueError, TypeError):
            pass
    return tensors[0] if len(tensors) == 1 else tensors


def _declared_inputs(model: Any) -> list[tuple[str, RawShape, str, str | None]]:
    try:
        tensors = list(model.inputs or [])
    except (AttributeError, ValueError):
        tensors = []
    if tensors:
        return [
            (t.name or f"input_{i}", tuple(t.shape), str(t.dtype or "float32"), None) for i, t in enumerate(tensors)
        ]
    # Subclassed models have no symbolic inputs; their build config may still record the shape.
    build = (model.get_build_config() or {}) if hasattr(model, "get_build_config") else {}
    shape = build.get("input_shape")
    if isinstance(shape, list | tuple) and all(d is None or isinstance(d, int) for d in shape):
        return [("input_0", tuple(shape), "float32", None)]
    return [("input_0", None, "float32", None)]


def layer_map(model: Any) -> dict[str, str]:
    """Layer name -> class name in model order, nested models flattened (so messages can name layers).

    A nested layer whose name is already taken is keyed by its path, ``outer/inner``.
    """
    result: dict[str, str] = {}
    for path, layer in _walk_layers(model, prefix=""):
        key = layer.name if layer.name not in result else path
        result[key] = type(layer).__name__
    return result


def _walk_layers(model: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for layer in getattr(model, "layers", None) or []:
        yield f"{prefix}{layer.name}", layer
        if getattr(layer, "layers", None):
            yield from _walk_layers(layer, prefix=f"{prefix}{layer.name}/")
