"""``load_calibration`` and ``synthetic_calibration``: any source in, one validated CalibrationSet out.

Every source goes through the same steps in the same order so the rules are the same for all of
them: read (shape and dtype checked on the whole source, cheaply), count, pick the seeded subset
(``exclude`` first, so calibration and evaluation never share a sample), convert only the subset to
float32, reject NaN/Inf, record ranges and warnings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError
from ..load.model import TensorSpec
from . import images as img
from .dataset import CalibrationSet
from .sources import MODULE_READ_FACTOR, RawSource, parse_spec, read_module, read_npy, read_npz
from .validate import check_count, few_samples_warning, select_indices, shape_str, to_float32, value_range

log = logging.getLogger(__name__)


def load_calibration(
    spec: str,
    inputs: list[TensorSpec],
    *,
    samples: int = 200,
    seed: int = 0,
    input_range: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    exclude: list[int] | None = None,
    with_labels: bool = False,
) -> CalibrationSet:
    """Read, validate and subsample representative data for ``inputs`` (see sources.py for ``spec``).

    ``input_range`` / ``mean`` / ``std`` say how image pixels map to model inputs; arrays and
    functions are taken as already preprocessed. ``with_labels`` makes labels mandatory (evaluation).
    """
    if not inputs:
        raise CalibrationDataError("Calibration needs the model's inputs; received none.", hint="Load the model first.")
    if samples < 1:
        raise CalibrationDataError(
            f"samples must be at least 1; received {samples}.", hint="Pass --calib-samples 200 (100-500 is typical)."
        )
    parsed = parse_spec(spec)
    if parsed.kind == "synthetic":
        result = synthetic_calibration(inputs, samples=samples, seed=seed)
    elif parsed.kind == "images":
        result = _from_images(parsed.path, parsed.text, inputs, samples, seed, input_range, mean, std, exclude)
    else:
        if parsed.kind == "npy":
            raw = read_npy(parsed, inputs)
        elif parsed.kind == "npz":
            raw = read_npz(parsed, inputs)
        else:
            raw = read_module(parsed, inputs, limit=samples * MODULE_READ_FACTOR)
        result = _from_arrays(raw, parsed.text, parsed.kind, inputs, samples, seed, exclude)
        if input_range is not None or mean is not None or std is not None:
            result.warnings.append(
                f"input_range/mean/std apply to image folders only; the arrays from '{parsed.text}' were used as they "
                "are, so they must already be preprocessed the way the model expects"
            )
    if with_labels and result.labels is None:
        raise CalibrationDataError(
            f"Evaluation data needs labels; '{spec}' carries none.",
            hint="Pass FILE.npz:X,Y, a folder with class sub-folders or labels.txt, or a function yielding (x, y).",
        )
    log.info("calibration data %s: %d of %d samples (%s)", result.source, result.count, result.available, result.kind)
    return result


def _from_arrays(
    raw: RawSource, text: str, kind: str, inputs: list[TensorSpec], samples: int, seed: int, exclude: list[int] | None
) -> CalibrationSet:
    available = int(raw.arrays[0].shape[0])
    check_count(available, f"'{text}'")
    indices = _select(available, samples, seed, exclude, text)
    warnings = list(raw.notes)
    arrays = [to_float32(a, indices, s, w, warnings) for a, s, w in zip(raw.arrays, inputs, raw.where, strict=True)]
    labels = np.asarray(raw.labels)[indices] if raw.labels is not None else None
    return _finish(arrays, labels, text, kind, indices, available, seed, raw.preprocessing, warnings)


def _from_images(
    folder: Path | None,
    text: str,
    inputs: list[TensorSpec],
    samples: int,
    seed: int,
    input_range: str | None,
    mean: list[float] | None,
    std: list[float] | None,
    exclude: list[int] | None,
) -> CalibrationSet:
    assert folder is not None
    if len(inputs) != 1:
        raise CalibrationDataError(
            f"An image folder feeds single-input models; the model has {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}).",
            hint="Pass an .npz with one array per input: FILE.npz:A;B.",
        )
    layout = img.image_layout(inputs[0])
    scaling = img.make_scaling(input_range, mean, std, layout.channels)
    listing = img.list_images(folder)
    available = len(listing.files)
    indices = _select(available, samples, seed, exclude, text)
    warnings = list(listing.warnings)
    array = img.decode_images(listing, indices, layout, scaling, warnings)
    if scaling.assumed:
        warnings.append(img.assumed_range_warning(folder))
    labels = listing.labels[indices] if listing.labels is not None else None
    source = f"{text.rstrip('/')}/ ({available} images)"
    result = _finish(
        [array],
        labels,
        source,
        "images",
        indices,
        available,
        seed,
        img.describe(len(indices), layout, scaling),
        warnings,
    )
    ends = np.stack([0.0 * scaling.scale + scaling.offset, 255.0 * scaling.scale + scaling.offset])
    result.declared_ranges = [(float(ends.min()), float(ends.max()))]
    if labels is not None:
        result.classes = listing.classes
        result.preprocessing += f", labels from {listing.label_source}"
    return result


def _select(available: int, samples: int, seed: int, exclude: list[int] | None, text: str) -> list[int]:
    indices = select_indices(available, samples, seed, exclude)
    if not indices:
        raise CalibrationDataError(
            f"Calibration data needs at least 1 sample; all {available} samples of '{text}' are excluded "
            f"({len(exclude or [])} indices excluded).",
            hint="Use a larger source, or fewer samples for the other split, so calibration and evaluation both get data.",
        )
    return indices


def _finish(
    arrays: list[np.ndarray],
    labels: np.ndarray | None,
    source: str,
    kind: str,
    indices: list[int],
    available: int,
    seed: int,
    preprocessing: str,
    warnings: list[str],
) -> CalibrationSet:
    few = few_samples_warning(len(indices))
    if few:
        warnings.append(few)
    return CalibrationSet(
        arrays=arrays,
        source=source,
        kind=kind,
        representative=True,
        indices=indices,
        available=available,
        seed=seed,
        value_ranges=[value_range(a) for a in arrays],
        labels=labels,
        preprocessing=preprocessing,
        warnings=warnings,
    )


def synthetic_calibration(
    inputs: list[TensorSpec], *, samples: int = 200, seed: int = 0, value_range: tuple[float, float] = (0.0, 1.0)
) -> CalibrationSet:
    """Uniform random samples: lets a conversion run without data, never to judge accuracy.

    Marked ``representative=False`` and warned about, because ranges from noise are not the model's
    real activation ranges and any accuracy or error number measured on it means nothing.
    """
    if not inputs:
        raise CalibrationDataError("Calibration needs the model's inputs; received none.", hint="Load the model first.")
    if samples < 1:
        raise CalibrationDataError(
            f"samples must be at least 1; received {samples}.", hint="Pass --calib-samples 200 (100-500 is typical)."
        )
    low, high = (float(v) for v in value_range)
    if not (np.isfinite([low, high]).all() and low < high):
        raise CalibrationDataError(
            f"Synthetic value_range needs finite low < high; received {value_range}.", hint="Pass e.g. (0.0, 1.0)."
        )
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        sample = tuple(spec.shape[1:])
        if any(not isinstance(d, int) or d <= 0 for d in sample):
            raise CalibrationDataError(
                f"Synthetic data needs static input shapes; input '{spec.name}' has shape {shape_str(spec.shape)}.",
                hint="Pass real calibration data, or export the model with a fixed input shape.",
            )
        arrays.append(rng.uniform(low, high, size=(samples, *sample)).astype(np.float32))
    warnings = [
        f"synthetic calibration: {samples} uniform random samples in [{low:g}, {high:g}] are not representative; "
        "quantization ranges and any accuracy or error numbers from them say nothing about real inputs, pass real data"
    ]
    result = _finish(
        arrays,
        None,
        "synthetic",
        "synthetic",
        list(range(samples)),
        samples,
        seed,
        f"uniform random in [{low:g}, {high:g}]",
        warnings,
    )
    result.representative = False
    return result
