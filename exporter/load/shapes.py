"""Turning a model's declared input shapes into the static batch-1 shapes every later stage assumes.

The Edge TPU, Vela and TFLite Micro all want fully static shapes with batch 1, so the load stage
settles the shapes once, here, and refuses early (with the exact flag to pass) instead of letting
the converter fail later with a less readable error.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputModelError
from .model import TensorSpec

#: A declared shape: ``None`` for an unknown rank, ``None`` (or -1) for an unknown dimension.
RawShape = tuple[int | None, ...] | None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception, shortened: TF and Keras errors often dump whole configs."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def normalize_dim(dim: int | None) -> int | None:
    """Both Keras (None) and TF protos / TFLite (-1) spell an unknown dimension; keep one spelling."""
    if dim is None or dim < 0:
        return None
    return int(dim)


def show_shape(shape: Sequence[int | None]) -> str:
    """A shape the way Keras prints it, so the message matches what users see in model.summary()."""
    dims = [normalize_dim(d) for d in shape]
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _template(shape: Sequence[int | None]) -> tuple[str, str]:
    """``1,H,W,C``-style placeholder and a concrete example for the --input-shape hint."""
    rest = [normalize_dim(d) for d in shape[1:]]
    if len(rest) == 3:
        letters = ["H", "W", "C"]
        guesses = [96, 96, 3]
    elif len(rest) == 2:
        letters = ["T", "F"]
        guesses = [49, 10]
    elif len(rest) == 1:
        letters = ["N"]
        guesses = [64]
    else:
        letters = [f"D{i + 1}" for i in range(len(rest))]
        guesses = [16] * len(rest)
    placeholder = ",".join(["1", *letters])
    example = ",".join(["1", *(str(d if d is not None else g) for d, g in zip(rest, guesses, strict=True))])
    return placeholder, example


def parse_input_shape(input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    """Validate the user's --input-shape on its own (before looking at any model)."""
    if input_shape is None:
        return None
    try:
        dims = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as exc:
        raise InputModelError(
            f"--input-shape must be a list of integers; received {input_shape!r}.",
            hint="Pass it as 1,H,W,C (e.g. 1,96,96,3).",
        ) from exc
    if not dims:
        raise InputModelError("--input-shape is empty.", hint="Pass it as 1,H,W,C (e.g. 1,96,96,3).")
    if any(d <= 0 for d in dims):
        raise InputModelError(
            f"--input-shape must hold positive sizes only; received {','.join(map(str, dims))}.",
            hint="Use 1 for the batch and the real sizes for the other dimensions.",
        )
    if dims[0] != 1:
        raise InputModelError(
            f"--input-shape must have batch 1 (edge targets run one sample at a time); received "
            f"{','.join(map(str, dims))}.",
            hint=f"Pass {','.join(['1', *map(str, dims[1:])])}.",
        )
    return dims


def resolve_inputs(
    declared: Sequence[tuple[str, RawShape, str, str | None]],
    input_shape: Sequence[int] | None,
    *,
    fixed: bool = False,
) -> tuple[list[TensorSpec], list[str]]:
    """Static batch-1 specs for ``(name, declared shape, dtype, tensor_name)`` inputs, plus notes.

    ``fixed`` is for .tflite files, whose shapes cannot be changed by re-exporting: a user shape
    that differs is an error rather than an override.
    """
    wanted = parse_input_shape(input_shape)
    if wanted is not None and len(declared) != 1:
        names = ", ".join(repr(d[0]) for d in declared)
        raise InputModelError(
            f"--input-shape applies to single-input models only; this model has {len(declared)} inputs ({names}).",
            hint="Drop --input-shape; give every input a static shape when exporting the model instead.",
        )
    specs: list[TensorSpec] = []
    notes: list[str] = []
    for name, shape, dtype, tensor_name in declared:
        if wanted is not None:
            resolved = _apply_user_shape(name, shape, wanted, fixed=fixed)
        else:
            resolved, note = _static_shape(name, shape)
            if note:
                notes.append(note)
        specs.append(TensorSpec(name=name, shape=resolved, dtype=dtype, tensor_name=tensor_name))
    return specs, notes


def _apply_user_shape(name: str, shape: RawShape, wanted: tuple[int, ...], *, fixed: bool) -> tuple[int, ...]:
    if shape is None:
        return wanted
    dims = [normalize_dim(d) for d in shape]
    if len(dims) != len(wanted):
        raise InputModelError(
            f"--input-shape {','.join(map(str, wanted))} has rank {len(wanted)} but model input '{name}' has rank "
            f"{len(dims)} {show_shape(dims)}.",
            hint=f"Pass {len(dims)} sizes, batch first (1).",
        )
    # The batch may differ (we always export batch 1); every other known size must match.
    check_from = 0 if fixed else 1
    for axis in range(check_from, len(dims)):
        if dims[axis] is not None and dims[axis] != wanted[axis]:
            raise InputModelError(
                f"--input-shape {','.join(map(str, wanted))} does not match model input '{name}' "
                f"{show_shape(dims)} at axis {axis} ({wanted[axis]} vs {dims[axis]}).",
                hint="Only the unknown (None) sizes can be chosen; keep the others as the model declares them.",
            )
    return wanted


def _static_shape(name: str, shape: RawShape) -> tuple[tuple[int, ...], str | None]:
    if shape is None:
        raise InputModelError(
            f"Model input '{name}' has an unknown rank.",
            hint="Pass --input-shape 1,H,W,C (e.g. 1,96,96,3) with the shape it takes.",
        )
    dims = [normalize_dim(d) for d in shape]
    if not dims:
        raise InputModelError(
            f"Model input '{name}' is a scalar; edge targets need a batch dimension.",
            hint="Export the model with inputs of shape (batch, ...).",
        )
    if any(d is None for d in dims[1:]):
        placeholder, example = _template(dims)
        raise InputModelError(
            f"Model input '{name}' has a dynamic shape {show_shape(dims)};",
            hint=f"pass --input-shape {placeholder} (e.g. {example}).",
        )
    note = None
    if dims[0] not in (None, 1):
        note = f"Input '{name}' declares a fixed batch of {dims[0]}; edgeport uses batch 1."
    return (1, *(int(d) for d in dims[1:] if d is not None)), note


def output_spec(name: str, shape: RawShape, dtype: str, tensor_name: str | None = None) -> TensorSpec:
    """Outputs follow the inputs' batch 1; a size the model cannot tell statically stays -1."""
    if shape is None:
        return TensorSpec(name=name, shape=(), dtype=dtype, tensor_name=tensor_name)
    dims = [normalize_dim(d) for d in shape]
    if dims:
        dims[0] = 1
    return TensorSpec(
        name=name, shape=tuple(-1 if d is None else d for d in dims), dtype=dtype, tensor_name=tensor_name
    )
