"""Parse a calibration ``spec`` and read .npy, .npz and ``module:function`` sources into arrays.

Grammar (first match wins)::

    synthetic                       uniform random data (see synthetic_calibration)
    <existing folder>               a folder of images (see images.py)
    <existing file>.npy             one array, single-input models
    <existing file>.npz             one array, or arrays named after the inputs, or x (+ y labels)
    FILE.npz:KEY[;KEY...][,LABELS]  the named arrays, one per input in input order, and a labels array
    path/to/file.py:FUNC            a function in a Python file
    dotted.module:FUNC              a function in an importable module (FUNC may be dotted: Cls.method)

The readers return every sample the source holds (a memory map for .npy) viewed as
``(N, *input_shape[1:])``; selecting the seeded subset and converting to float32 happens afterwards,
the same way for every source.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationDataError
from ..load.model import TensorSpec
from .validate import check_numeric, conform_shape

log = logging.getLogger(__name__)

#: ``module:function`` sources are read up to ``samples * MODULE_READ_FACTOR`` samples, then subsampled.
MODULE_READ_FACTOR = 5

_SPEC_HINT = (
    "Pass an .npy/.npz file, FILE.npz:KEY, a folder of images, module:function, path/file.py:function or 'synthetic'."
)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_LABEL_KEYS = ("y", "labels", "label")


@dataclass(frozen=True)
class Spec:
    """A parsed calibration spec."""

    kind: str  # "images" | "npy" | "npz" | "module" | "synthetic"
    text: str  # what the user passed
    path: Path | None = None  # the file or folder (also the .py file of a module source)
    keys: tuple[str, ...] = ()  # npz arrays named for the inputs, in input order
    label_key: str | None = None  # npz array holding labels
    module: str | None = None  # dotted module name (module sources without a .py path)
    function: str | None = None  # attribute path of the function


@dataclass
class RawSource:
    """Every sample of a source, one array per model input, before selection."""

    arrays: list[np.ndarray]
    labels: np.ndarray | None
    where: list[str]  # per input, where the array came from, for messages ("calib.npz['x']")
    notes: list[str] = field(default_factory=list)  # warnings for the user
    preprocessing: str = ""


def parse_spec(text: str) -> Spec:
    """Decide what ``text`` names; a file that does not exist is reported here, before anything is read."""
    text = text.strip()
    if not text:
        raise CalibrationDataError("Calibration data spec is empty.", hint=_SPEC_HINT)
    if text.lower() == "synthetic":
        return Spec("synthetic", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return Spec("images", text, path=path)
    if path.is_file():
        return _spec_for_file(text, path)
    if ":" in text:
        left, right = text.rsplit(":", 1)
        return _spec_with_colon(text, left, right)
    raise CalibrationDataError(f"Calibration data '{text}' was not found (no such file or folder).", hint=_SPEC_HINT)


def _spec_for_file(text: str, path: Path) -> Spec:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Spec("npy", text, path=path)
    if suffix == ".npz":
        return Spec("npz", text, path=path)
    if suffix == ".py":
        raise CalibrationDataError(
            f"A Python file needs the function to call; received '{text}'.", hint=f"Pass '{text}:function_name'."
        )
    if suffix in {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}:
        raise CalibrationDataError(
            f"Image calibration needs a folder of images; received the single file '{text}'.",
            hint=f"Pass the folder that holds it ('{path.parent}'), ideally with 100-500 images.",
        )
    raise CalibrationDataError(
        f"Calibration file '{text}' has unsupported type '{suffix or '(none)'}'.", hint=_SPEC_HINT
    )


def _spec_with_colon(text: str, left: str, right: str) -> Spec:
    path = Path(left).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy", ".py") and not path.is_file():
        raise CalibrationDataError(f"Calibration file '{left}' was not found (from '{text}').", hint=_SPEC_HINT)
    if suffix == ".npy":
        raise CalibrationDataError(
            f"A .npy file holds one array and takes no key; received '{text}'.",
            hint=f"Pass '{left}', or save several arrays with numpy.savez and pass FILE.npz:KEY.",
        )
    if suffix == ".npz":
        samples_part, comma, labels_part = right.partition(",")
        keys = tuple(k.strip() for k in samples_part.split(";"))
        if not all(keys) or "," in labels_part or (comma and not labels_part.strip()):
            raise CalibrationDataError(
                f"Cannot parse the keys of '{text}'; expected FILE.npz:KEY, FILE.npz:X,Y or FILE.npz:A;B[,Y].",
                hint="Name the sample array(s), ';' between inputs, then optionally ',' and the labels array.",
            )
        return Spec("npz", text, path=path, keys=keys, label_key=labels_part.strip() or None)
    if not _DOTTED.match(right):
        raise CalibrationDataError(
            f"Calibration data '{text}' was not found, and '{right}' is not a function name.", hint=_SPEC_HINT
        )
    if suffix == ".py":
        return Spec("module", text, path=path, function=right)
    if _DOTTED.match(left):
        return Spec("module", text, module=left, function=right)
    raise CalibrationDataError(f"Calibration data '{text}' was not found (no such file or folder).", hint=_SPEC_HINT)


# --------------------------------------------------------------------------------------------- .npy


def read_npy(spec: Spec, inputs: list[TensorSpec]) -> RawSource:
    """One memory-mapped array: only the selected samples are ever read from disk."""
    assert spec.path is not None
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise CalibrationDataError(
            f"A .npy file holds one array but the model has {len(inputs)} inputs ({names}); received '{spec.text}'.",
            hint="Save one array per input with numpy.savez and pass FILE.npz:"
            + ";".join(i.name for i in inputs)
            + ".",
        )
    _check_magic(spec.path, _NPY_MAGIC, ".npy", "numpy.save(path, array)")
    try:
        array = np.load(spec.path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise CalibrationDataError(
                f"Input '{inputs[0].name}' needs numeric samples; '{spec.text}' holds Python objects (dtype object).",
                hint="Convert the data to float32 (numpy: array.astype('float32')) before saving it.",
            ) from exc
        raise _corrupt(spec.path, ".npy", exc) from exc
    except Exception as exc:  # truncated header, bad mmap length, I/O errors
        raise _corrupt(spec.path, ".npy", exc) from exc
    where = f"'{spec.text}'"
    return _conformed([array], None, inputs, [where])


def _check_magic(path: Path, magic: bytes, kind: str, how: str) -> None:
    """A text or pickle file renamed .npy gets a clear message instead of numpy's pickle complaint."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(magic))
    except OSError as exc:
        raise _corrupt(path, kind, exc) from exc
    if head != magic:
        raise CalibrationDataError(
            f"Cannot read '{path}' as a NumPy {kind} file: it does not start with the {kind} signature "
            f"(first bytes {head[:8]!r}).",
            hint=f"Write it with {how}; a text, CSV or pickle file only renamed to {kind} cannot be read.",
        )


def _corrupt(path: Path, kind: str, exc: BaseException) -> CalibrationDataError:
    return CalibrationDataError(
        f"Cannot read '{path}' as a NumPy {kind} file ({type(exc).__name__}: {_one_line(exc)}).",
        hint=f"The file is corrupt or truncated; write it again with numpy.{'save' if kind == '.npy' else 'savez'}.",
    )


def _conformed(
    arrays: list[np.ndarray], labels: np.ndarray | None, inputs: list[TensorSpec], where: list[str]
) -> RawSource:
    """Check dtype and shape of each input array, and that all of them (and the labels) count alike."""
    notes: list[str] = []
    out: list[np.ndarray] = []
    for array, spec, w in zip(arrays, inputs, where, strict=True):
        check_numeric(array, spec, w)
        view, note = conform_shape(array, spec, w)
        out.append(view)
        if note:
            notes.append(note)
    counts = [int(a.shape[0]) for a in out]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{s.name}: {c}" for s, c in zip(inputs, counts, strict=True))
        raise CalibrationDataError(
            f"Every input needs the same number of samples; received {listed}.",
            hint="Pass arrays with one row per sample for every input, in the same order.",
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0 or labels.shape[0] != counts[0]:
            raise CalibrationDataError(
                f"Labels must hold one entry per sample; received labels of shape {labels.shape} for {counts[0]} samples.",
                hint="Pass labels of shape (N,) (class indices) or (N, classes) (one-hot).",
            )
    return RawSource(out, labels, where, notes)


# --------------------------------------------------------------------------------------------- .npz


def read_npz(spec: Spec, inputs: list[TensorSpec]) -> RawSource:
    """Arrays from an .npz: named by the spec, by the input names, or the file's only array."""
    assert spec.path is not None
    _check_magic(spec.path, _ZIP_MAGIC, ".npz", "numpy.savez(path, x=..., y=...)")
    try:
        archive = np.load(spec.path, allow_pickle=False)
    except Exception as exc:
        raise _corrupt(spec.path, ".npz", exc) from exc
    with archive:
        keys, label_key = _choose_keys(spec, list(archive.files), inputs)
        arrays = [_npz_array(archive, spec, k, i) for k, i in zip(keys, inputs, strict=True)]
        labels = _npz_array(archive, spec, label_key, None) if label_key else None
    where = [f"'{spec.path}'[{k!r}]" for k in keys]
    return _conformed(arrays, labels, inputs, where)


def _choose_keys(spec: Spec, files: list[str], inputs: list[TensorSpec]) -> tuple[list[str], str | None]:
    names = [i.name for i in inputs]
    listed = ", ".join(files) or "(no arrays)"
    if spec.keys:
        for key in [*spec.keys, *([spec.label_key] if spec.label_key else [])]:
            if key not in files:
                raise CalibrationDataError(
                    f"Array '{key}' is not in '{spec.path}'; the file holds: {listed}.",
                    hint=f"Pass {spec.path}:KEY with one of those keys.",
                )
        if len(spec.keys) != len(inputs):
            raise CalibrationDataError(
                f"The model has {len(inputs)} input(s) ({', '.join(names)}) but '{spec.text}' names "
                f"{len(spec.keys)} array(s).",
                hint=f"Name one array per input, in input order, separated by ';': {spec.path}:A;B.",
            )
        return list(spec.keys), spec.label_key
    if not files:
        raise CalibrationDataError(
            f"Calibration data needs at least 1 sample; '{spec.path}' holds no arrays.",
            hint="Save the samples with numpy.savez(path, x=samples).",
        )
    if len(inputs) == 1 and len(files) == 1:
        return files, None
    if all(n in files for n in names):
        return names, _auto_label_key(files, names)
    if len(inputs) == 1 and "x" in files:
        return ["x"], _auto_label_key(files, ["x"])
    raise CalibrationDataError(
        f"'{spec.path}' holds several arrays ({listed}) and none is named after the model input(s) "
        f"({', '.join(names)}); name the one(s) to use.",
        hint=f"Pass {spec.path}:KEY, {spec.path}:X,Y for samples and labels, or {spec.path}:A;B for several inputs.",
    )


def _auto_label_key(files: list[str], used: list[str]) -> str | None:
    """A conventional labels array (y, labels, label) next to the samples is taken as labels."""
    return next((k for k in _LABEL_KEYS if k in files and k not in used), None)


def _npz_array(archive: Any, spec: Spec, key: str, input_spec: TensorSpec | None) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "Object arrays" in str(exc):
            what = f"Input '{input_spec.name}' needs" if input_spec else "Labels need"
            raise CalibrationDataError(
                f"{what} numeric data; '{spec.path}'[{key!r}] holds Python objects (dtype object).",
                hint="Convert the data to float32 / int64 before saving it.",
            ) from exc
        raise _corrupt(spec.path or Path(spec.text), ".npz", exc) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _corrupt(spec.path or Path(spec.text), ".npz", exc) from exc


# ------------------------------------------------------------------------------------ module:function


def resolve_function(spec: Spec) -> Callable[[], Any]:
    """Import the module (or the .py file) and return the named attribute, which must be callable."""
    label = spec.text
    assert spec.function is not None
    try:
        with _importable(spec.path.parent.resolve() if spec.path else Path.cwd()):
            module = _load_file_module(spec.path) if spec.path else importlib.import_module(spec.module or "")
    except CalibrationDataError:
        raise
    except BaseException as exc:  # user code: SyntaxError, ImportError, SystemExit, anything at import time
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CalibrationDataError(
            f"Cannot import '{spec.path or spec.module}' for calibration data '{label}' "
            f"({type(exc).__name__}: {_one_line(exc)}).",
            hint="Check that the module imports on its own (python -c 'import ...') from the current folder.",
        ) from exc
    target: Any = module
    for part in spec.function.split("."):
        if not hasattr(target, part):
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise CalibrationDataError(
                f"'{spec.path or spec.module}' has no function '{spec.function}' (calibration data '{label}'); "
                f"its functions: {', '.join(public[:12]) or '(none)'}.",
                hint="Pass module:function with a function that takes no arguments and yields samples.",
            )
        target = getattr(target, part)
    if not callable(target):
        raise CalibrationDataError(
            f"'{label}' must name a function; received a {type(target).__name__}.",
            hint="Wrap the data in a function that takes no arguments and yields samples.",
        )
    return target


@contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """Let the user's module import its neighbours, without leaving the folder on sys.path."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _load_file_module(path: Path) -> Any:
    name = f"_edgeport_calib_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{abs(hash(str(path.resolve()))):x}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise CalibrationDataError(f"Cannot load '{path}' as a Python module.", hint="Pass a .py source file.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def read_module(spec: Spec, inputs: list[TensorSpec], limit: int) -> RawSource:
    """Call the function and collect up to ``limit`` samples from what it yields.

    Each item may be one sample or a batch of them: an array (single input), a list/tuple with one
    array per input, a dict keyed by input name, or a ``(features, labels)`` pair of those. The bound
    keeps an endless generator (a tf.data pipeline with ``repeat()``) from running forever.
    """
    function = resolve_function(spec)
    label = spec.text
    per_input: list[list[np.ndarray]] = [[] for _ in inputs]
    labels: list[np.ndarray] = []
    total = 0
    truncated = False
    iterator: Any = None
    try:
        result = function()
        iterator = iter([result]) if isinstance(result, np.ndarray) else iter(result)
        for number in itertools.count():
            if total >= limit:
                truncated = _has_more(iterator)
                break
            try:
                item = next(iterator)
            except StopIteration:
                break
            arrays, item_labels = _split_item(item, inputs, label, number)
            where = f"item {number} of '{label}'"
            conformed = _conformed(arrays, None, inputs, [where] * len(inputs)).arrays
            count = int(conformed[0].shape[0])
            for bucket, array in zip(per_input, conformed, strict=True):
                bucket.append(np.asarray(array))
            if item_labels is not None:
                labels.append(_item_labels(item_labels, count, where))
            elif labels:
                raise CalibrationDataError(
                    f"'{label}' yielded labels for earlier items but none with item {number}.",
                    hint="Yield (features, labels) for every item, or never.",
                )
            total += count
    except CalibrationDataError:
        raise
    except Exception as exc:
        raise CalibrationDataError(
            f"Calibration function '{label}' raised {type(exc).__name__}: {_one_line(exc)}.",
            hint="Fix the function; it must take no arguments and return an iterable of samples.",
        ) from exc
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # a generator's cleanup failing does not change the samples we hold
                log.debug("closing %s failed", label, exc_info=True)
    truncated = truncated or total > limit
    if total == 0:
        raise CalibrationDataError(
            f"Calibration data needs at least 1 sample; '{label}' yielded none.",
            hint="Make the function yield arrays (or lists/dicts of arrays for several inputs).",
        )
    if labels and len(labels) != len(per_input[0]):
        raise CalibrationDataError(
            f"'{label}' yielded labels for only some items.", hint="Yield (features, labels) for every item, or never."
        )
    try:
        arrays = [np.concatenate(bucket)[:limit] for bucket in per_input]
        all_labels = np.concatenate(labels)[:limit] if labels else None
    except ValueError as exc:  # only possible when the model has dynamic dims and items differ in size
        raise CalibrationDataError(
            f"Every item of '{label}' must have the same sample shape ({_one_line(exc)}).",
            hint="Resize or pad the samples to one shape, the one the exported model will have.",
        ) from exc
    raw = _conformed(arrays, all_labels, inputs, [f"'{label}'"] * len(inputs))
    raw.preprocessing = (
        f"read {arrays[0].shape[0]} samples from {label}() (at most {limit} = {MODULE_READ_FACTOR} x samples)"
    )
    if truncated:
        raw.notes.append(
            f"stopped reading '{label}' after {limit} samples ({MODULE_READ_FACTOR} x samples); the subset is drawn "
            "from those only, so shuffle the data if it is ordered (e.g. by class)"
        )
    return raw


def _has_more(iterator: Any) -> bool:
    try:
        next(iterator)
    except StopIteration:
        return False
    return True


def _split_item(item: Any, inputs: list[TensorSpec], label: str, number: int) -> tuple[list[np.ndarray], Any]:
    """One yielded item -> (one array per input, labels or None)."""
    names = [i.name for i in inputs]
    features, item_labels = item, None
    # (features, labels), the tf.data convention: any 2-tuple for a single-input model; for several
    # inputs only when the first element groups the inputs (a 2-tuple of arrays is two inputs).
    if isinstance(item, tuple) and len(item) == 2 and (len(inputs) == 1 or isinstance(item[0], list | tuple | dict)):
        features, item_labels = item
    if isinstance(features, dict):
        missing = [n for n in names if n not in features]
        if missing:
            raise CalibrationDataError(
                f"Item {number} of '{label}' is a dict without key(s) {', '.join(missing)}; it has "
                f"{', '.join(map(str, features)) or '(none)'}.",
                hint=f"Key the dict by the model's input names: {', '.join(names)}.",
            )
        arrays = [features[n] for n in names]
    elif isinstance(features, list | tuple):
        if len(features) != len(inputs):
            raise CalibrationDataError(
                f"Item {number} of '{label}' holds {len(features)} array(s); the model has {len(inputs)} "
                f"input(s) ({', '.join(names)}).",
                hint="Yield one array per input, in input order, or a dict keyed by input name.",
            )
        arrays = list(features)
    elif len(inputs) == 1:
        arrays = [features]
    else:
        raise CalibrationDataError(
            f"Item {number} of '{label}' is a single {type(features).__name__}; the model has {len(inputs)} inputs "
            f"({', '.join(names)}).",
            hint="Yield a list with one array per input, or a dict keyed by input name.",
        )
    try:
        return [np.asarray(a) for a in arrays], item_labels
    except Exception as exc:
        raise CalibrationDataError(
            f"Item {number} of '{label}' cannot be turned into arrays ({type(exc).__name__}: {_one_line(exc)}).",
            hint="Yield numpy arrays (or tensors with .numpy()).",
        ) from exc


def _item_labels(value: Any, count: int, where: str) -> np.ndarray:
    labels = np.asarray(value)
    if labels.ndim == 0 or (count == 1 and labels.shape[0] != 1):
        labels = labels[None]
    if labels.shape[0] != count:
        raise CalibrationDataError(
            f"Labels of {where} must hold one entry per sample; received shape {labels.shape} for {count} samples.",
            hint="Yield (features, labels) with as many labels as samples.",
        )
    return labels


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."
