"""Checks every calibration source goes through, whatever file or function it came from.

The TFLite calibrator accepts almost anything and quietly produces a bad model: a NaN sample poisons
a tensor's range, a wrong layout is broadcast or crashes in native code, uint8 pixels fed to a model
trained on 0..1 put every activation range 255x too wide. So the data is checked here, in Python,
before the converter ever sees it, and each problem gets its own one-line message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import CalibrationDataError
from ..load.model import TensorSpec

log = logging.getLogger(__name__)

#: Below this many samples the per-tensor ranges are likely to miss real activations.
FEW_SAMPLES = 50

#: dtype kinds we can turn into float32 samples: bool, signed/unsigned integer, float.
_NUMERIC_KINDS = "biuf"


def shape_str(shape: Sequence[int | str | None]) -> str:
    """``(1, 28, 28, 1)`` with dynamic dims shown as ``None``, for messages."""
    dims = ["None" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _dims_match(actual: Sequence[int], expected: Sequence[int | None]) -> bool:
    """Dynamic model dims (None or -1) match any size; everything else must be equal."""
    if len(actual) != len(expected):
        return False
    return all(e is None or e < 0 or a == e for a, e in zip(actual, expected, strict=True))


def conform_shape(array: np.ndarray, spec: TensorSpec, where: str) -> tuple[np.ndarray, str | None]:
    """View ``array`` as ``(N, *spec.shape[1:])``; return it and a note when it had to be reshaped.

    Accepted: ``(N, *s)``; exactly ``s`` (one sample); ``(N, 1, *s)`` (a stack of batch-1 samples,
    what ``np.stack`` of model inputs gives); ``(N, *s[:-1])`` when the model's last axis is 1 (MNIST
    saved without its channel axis). Only views are taken so a memory-mapped .npy stays on disk.
    """
    sample = tuple(spec.shape[1:])
    shape = tuple(array.shape)
    if array.ndim == len(sample) + 1 and _dims_match(shape[1:], sample):
        return array, None
    if array.ndim == len(sample) and _dims_match(shape, sample):
        return array[None], None
    if array.ndim == len(sample) + 2 and shape[1] == 1 and _dims_match(shape[2:], sample):
        return array[:, 0], None
    if sample and sample[-1] == 1 and array.ndim == len(sample) and _dims_match(shape[1:], sample[:-1]):
        note = f"input '{spec.name}': added a channel axis of size 1 to {where} {shape_str(shape)}"
        return array[..., None], note
    wanted = shape_str(("N", *sample))  # type: ignore[arg-type]
    raise CalibrationDataError(
        f"Input '{spec.name}' expects samples of shape {shape_str(sample)} (model input {shape_str(spec.shape)}); "
        f"received shape {shape_str(shape)} from {where}.",
        hint=f"Pass an array of shape {wanted} matching the model's layout, e.g. transpose NCHW data to NHWC.",
    )


def check_numeric(array: np.ndarray, spec: TensorSpec, where: str) -> None:
    """Strings, objects and complex numbers cannot be calibration samples."""
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise CalibrationDataError(
            f"Input '{spec.name}' needs numeric samples; received dtype {array.dtype} from {where}.",
            hint="Convert the data to float32 (numpy: array.astype('float32')) before saving it.",
        )


def check_count(available: int, where: str) -> None:
    """An empty source is an error, not an empty calibration set the converter would choke on."""
    if available <= 0:
        raise CalibrationDataError(
            f"Calibration data needs at least 1 sample; {where} holds 0.",
            hint="Pass 100-500 real samples of what the model sees in the field.",
        )


def select_indices(available: int, samples: int, seed: int, exclude: Sequence[int] | None = None) -> list[int]:
    """A seeded, sorted subset of ``range(available)`` of at most ``samples`` indices.

    ``exclude`` is removed first, so calibration and evaluation sets drawn from the same source with
    the same seed stay disjoint. Sorted so that reading a memory-mapped file stays sequential and the
    report's index list is easy to read.
    """
    if samples < 1:
        raise CalibrationDataError(
            f"samples must be at least 1; received {samples}.", hint="Pass --calib-samples 200 (100-500 is typical)."
        )
    pool = np.arange(available, dtype=np.int64)
    if exclude:
        excluded = np.asarray(list(exclude), dtype=np.int64)
        if (excluded < 0).any():
            raise CalibrationDataError(
                f"exclude holds negative index {int(excluded[excluded < 0][0])}; indices count from 0.",
                hint="Pass the indices of the source samples to leave out, e.g. those used for calibration.",
            )
        pool = np.setdiff1d(pool, excluded, assume_unique=False)
    if pool.size > samples:
        rng = np.random.default_rng(seed)
        pool = np.sort(rng.choice(pool, size=samples, replace=False))
    return [int(i) for i in pool]


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Disjoint seeded splits of ``range(n)``, e.g. ``{"train": .8, "calib": .1, "eval": .1}``.

    One permutation is cut into consecutive chunks so no index lands in two splits. Sizes are
    ``floor(n * fraction)``; when the fractions sum to 1 the left-over indices go to the splits with the
    largest remainders so every index is used. Each list is sorted.
    """
    if n < 0:
        raise CalibrationDataError(f"split_indices needs n >= 0; received {n}.")
    bad = {k: v for k, v in fractions.items() if not (0.0 <= float(v) <= 1.0)}
    if bad:
        raise CalibrationDataError(
            f"Split fractions must lie in [0, 1]; received {bad}.", hint="Pass e.g. {'calib': 0.5, 'eval': 0.5}."
        )
    total = float(sum(fractions.values()))
    if total > 1.0 + 1e-9:
        raise CalibrationDataError(
            f"Split fractions must sum to at most 1; received {total:g} from {dict(fractions)}.",
            hint="Lower the fractions so the splits do not overlap.",
        )
    exact = {k: n * float(v) for k, v in fractions.items()}
    sizes = {k: int(np.floor(v)) for k, v in exact.items()}
    if abs(total - 1.0) <= 1e-9:
        leftover = n - sum(sizes.values())
        for k in sorted(exact, key=lambda k: (-(exact[k] - sizes[k]), list(exact).index(k)))[:leftover]:
            sizes[k] += 1
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[int]] = {}
    start = 0
    for k, size in sizes.items():
        out[k] = sorted(int(i) for i in order[start : start + size])
        start += size
    return out


def check_finite(subset: np.ndarray, indices: Sequence[int], spec: TensorSpec, where: str) -> None:
    """NaN or Inf in one sample makes a whole tensor's quantization range meaningless."""
    flat = subset.reshape(subset.shape[0], -1)
    has_nan = np.isnan(flat).any(axis=1)
    has_inf = np.isinf(flat).any(axis=1)
    bad = has_nan | has_inf
    if not bad.any():
        return
    what = "NaN and Inf" if has_nan.any() and has_inf.any() else ("NaN" if has_nan.any() else "Inf")
    first = int(indices[int(np.argmax(bad))])
    raise CalibrationDataError(
        f"Input '{spec.name}' holds {what} in {int(bad.sum())} of {len(indices)} selected samples "
        f"(first at source index {first}) from {where}.",
        hint="Drop or fix those samples (numpy: np.isfinite(x).all(axis=tuple(range(1, x.ndim)))).",
    )


def to_float32(
    array: np.ndarray, indices: Sequence[int], spec: TensorSpec, where: str, warnings: list[str]
) -> np.ndarray:
    """Materialize the selected samples as float32, warning when integers feed a float model.

    Integer data is usually raw pixels or counts; if the model was trained on rescaled values the
    calibration ranges come out wrong by the scale factor, which is worth one warning.
    """
    subset = np.asarray(array[np.asarray(indices, dtype=np.int64)])
    if subset.dtype.kind in "biu" and spec.dtype.startswith("float"):
        lo, hi = (int(subset.min()), int(subset.max())) if subset.size else (0, 0)
        warnings.append(
            f"input '{spec.name}': integer samples ({subset.dtype}, values {lo}..{hi}) from {where} were converted "
            f"to float32 as is; if the model expects scaled values (e.g. 0..1), scale the data before passing it"
        )
    out = subset.astype(np.float32, copy=False)
    check_finite(out, indices, spec, where)
    return out


def value_range(array: np.ndarray) -> tuple[float, float]:
    """(min, max) over all selected samples, recorded for the report and the range checks later."""
    if array.size == 0:
        return (0.0, 0.0)
    return (float(array.min()), float(array.max()))


def few_samples_warning(count: int, role: str = "calibration") -> str | None:
    """Too few samples: for calibration, rare activations fall outside the ranges the converter sets;
    for evaluation, one sample moves every accuracy figure by whole percentage points."""
    if count >= FEW_SAMPLES:
        return None
    if role == "evaluation":
        return (
            f"fidelity measured on {count} evaluation samples is coarse: one sample moves accuracy and agreement "
            f"by {100 / count:.2g} percentage points; 200 or more is typical"
        )
    return f"quantization ranges from {count} samples may be unrepresentative; 100-500 is typical"
