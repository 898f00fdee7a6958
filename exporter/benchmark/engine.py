"""The small interface every interpreter adapter implements, and the inputs fed to it.

The timing loop (:mod:`exporter.benchmark.worker`) only sees :class:`Engine`, so LiteRT, TFLite Micro
and onnxruntime are timed by the same code and their numbers can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class EngineError(Exception):
    """A failure the parent turns into an edgeport error; ``kind`` picks the class (and exit code)."""

    def __init__(self, kind: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # "model" (exit 2), "usage" (exit 2), "not_supported" (exit 3)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0


class Engine(Protocol):
    def load(self) -> None: ...
    def input_specs(self) -> list[InputSpec]: ...
    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None: ...
    def invoke(self) -> None: ...


def random_inputs(specs: Sequence[InputSpec], seed: int) -> list[np.ndarray]:
    """Seeded data of each input's dtype and shape: the full integer range, or 0..1 for floats."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        if spec.dtype == np.bool_:
            arrays.append(rng.integers(0, 2, spec.shape).astype(np.bool_))
        elif np.issubdtype(spec.dtype, np.integer):
            info = np.iinfo(spec.dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, spec.shape, dtype=spec.dtype))
        else:
            arrays.append(rng.random(spec.shape).astype(spec.dtype))
    return arrays


def file_inputs(path: Path, specs: Sequence[InputSpec]) -> tuple[list[np.ndarray], list[str]]:
    """Inputs from a .npy (one input) or .npz (by input name, else in order), fitted to each spec.

    Accepted: the exact shape, the shape without its batch dimension, or a stack of samples (the first
    is used). Real-valued data for an integer input is quantized with the input's own scale and zero
    point, as firmware would.
    """
    notes: list[str] = []
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EngineError(
            "usage", f"Cannot read input file {path} ({exc}).", "Pass a .npy or .npz array file."
        ) from exc
    if isinstance(loaded, np.ndarray):
        arrays = [loaded]
    else:
        with loaded:
            by_name = {spec.name: loaded[spec.name] for spec in specs if spec.name in loaded.files}
            arrays = (
                [by_name[s.name] for s in specs] if len(by_name) == len(specs) else [loaded[k] for k in loaded.files]
            )
    if len(arrays) != len(specs):
        raise EngineError(
            "usage",
            f"Input file {path} holds {len(arrays)} array(s); the model has {len(specs)} input(s) "
            f"({', '.join(s.name for s in specs)}).",
            "Use an .npz with one array per input, named after the inputs.",
        )
    fitted = []
    for spec, array in zip(specs, arrays, strict=True):
        fitted.append(_fit(array, spec, path, notes))
    return fitted, notes


def _fit(array: np.ndarray, spec: InputSpec, path: Path, notes: list[str]) -> np.ndarray:
    shape = tuple(array.shape)
    if shape == spec.shape:
        pass
    elif (1, *shape) == spec.shape:
        array = array.reshape(spec.shape)
    elif len(shape) == len(spec.shape) and shape[1:] == spec.shape[1:] and shape[0] > 1:
        array = array[:1]
        notes.append(f"input '{spec.name}': used the first of {shape[0]} samples in {path.name}")
    else:
        raise EngineError(
            "usage",
            f"Input file {path}: array of shape {shape} does not fit input '{spec.name}' of shape {spec.shape}.",
            f"Save one sample shaped {spec.shape} or {spec.shape[1:]}.",
        )
    if array.dtype == spec.dtype:
        return np.ascontiguousarray(array)
    if np.issubdtype(spec.dtype, np.integer) and np.issubdtype(array.dtype, np.floating) and spec.scale:
        from ..analyze.inference import quantize

        notes.append(f"input '{spec.name}': quantized with scale {spec.scale:g}, zero point {spec.zero_point}")
        return quantize(array.astype(np.float32), spec.dtype, spec.scale, spec.zero_point)
    if np.issubdtype(spec.dtype, np.floating) and np.issubdtype(array.dtype, np.number):
        return array.astype(spec.dtype)
    raise EngineError(
        "usage",
        f"Input file {path}: dtype {array.dtype} does not fit input '{spec.name}' ({np.dtype(spec.dtype).name}).",
        f"Save the array as {np.dtype(spec.dtype).name}, or as float32 real values for a quantized input.",
    )
