"""What each weight tensor's input looks like on the calibration data, for clustering that minds the output.

Plain per-channel clustering minimises the weights' own squared error; what matters is the layer's
output. Statistics of the input activation, per input feature (the last axis, as int8 minus its zero
point), turn it into that:

- ``mean_square``: E[(x_q - zp)^2]. Weighting each weight's error by it (a weighted histogram in the same
  exact DP) spends the K values where the inputs are large.
- ``mean``: E[x_q - zp]. The clustered weights' error shifts each output channel by
  sum_j dW[o, j] * E[x_j] on average; subtracting that from the int32 bias (exact integer accumulator
  units) removes the shift.
- ``covariance`` (inputs up to :data:`MAX_COVARIANCE_FEATURES` wide): the output error of a row is
  dW Cov[x] dW^T, correlations included; the value tables are refitted under it
  (:func:`exporter.compress.int8_cluster.refit_to_output`).

Clustering layer by layer (:class:`ActivationProbe`): each layer's statistics are taken on the model whose
earlier layers are already clustered, against the unclustered model's input of the same layer on the same
samples (``cross`` = Cov[x', x], ``reference_mean`` = E[x]). The refit then targets the unclustered layer's
output, which undoes part of the error the earlier layers made; the bias takes the whole mean drift.

Measured on MLPerf AD (per-channel, LiteRT, 196 windows, anomaly score against float): K=8 +17.4 % plain,
+3.0 % weighted with the bias corrected, +1.3 % refitted. The statistics come from LiteRT with every
intermediate tensor kept, on a few calibration samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Ops whose filter (input 1) is clustered with these statistics; the input features are the last axis.
STAT_OPS = ("FULLY_CONNECTED", "CONV_2D")
#: Calibration samples the statistics are taken on (all of a default calibration set).
MAX_SAMPLES = 256
#: Inputs up to this many features also get their full covariance (640 x 640 float64: 3.3 MB), which
#: lets the value tables be refitted to the layer's output, correlations included.
MAX_COVARIANCE_FEATURES = 1024
#: Rows (positions x samples) kept per op for the statistics: a sample's positions are thinned evenly to
#: this many divided by the samples, so two photos keep every position of a 48x48 map, and a
#: fully-connected layer (one position per sample) takes every sample. A covariance of J features wants
#: many more than J rows: AD's 640-wide layers from 32 samples gave a rank-32 estimate, and its refit
#: then fitted those samples (K=8 score +1.3 % from float); from 196, +0.5 %.
MAX_ROWS = 16384


@dataclass(frozen=True)
class InputStats:
    """Per input feature of one op: E[x - zp] and E[(x - zp)^2], in int8 units, over ``samples``."""

    op_index: int
    mean: np.ndarray
    mean_square: np.ndarray
    samples: int
    #: Cov[x] over every position and sample (features x features), or None for wide inputs.
    covariance: np.ndarray | None = None
    #: Layer by layer: Cov[x', x] against the unclustered model's input x (else None: x' = x).
    cross: np.ndarray | None = None
    #: Layer by layer: E[x] of the unclustered model's input (else None: the same as ``mean``).
    reference_mean: np.ndarray | None = None


def stat_ops(model: bytes) -> list[Any]:
    """The ops whose weight tensor (input 1) gets statistics, in execution order."""
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    return [op for op in graph.ops if op.name in STAT_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0]


def input_stats(model: bytes, samples: Sequence[Sequence[np.ndarray]]) -> dict[int, InputStats]:
    """Weight tensor index -> the statistics of the input it multiplies, for every FC and CONV_2D op.

    ``samples``: per sample, one float array per model input (quantized here with the input's scale and
    zero point, as the calibrated model expects)."""
    ops = stat_ops(model)
    if not ops or not samples:
        return {}
    probe = ActivationProbe(model, samples)
    moments = {op.inputs[0]: _Moments() for op in ops}  # ops reading one tensor share its moments
    for rows in probe.rows(model, list(moments)):  # one sample at a time: memory stays per op, not per row
        for tensor, x in rows.items():
            moments[tensor].add(x)
    return {op.inputs[1]: moments[op.inputs[0]].stats(op.index, len(probe.samples)) for op in ops}


class ActivationProbe:
    """The inputs of chosen ops on fixed calibration samples, for the original model and edited copies."""

    def __init__(self, model: bytes, samples: Sequence[Sequence[np.ndarray]]) -> None:
        self.reference = model
        self.samples = list(samples)[:MAX_SAMPLES]

    def inputs(self, model: bytes, tensors: Sequence[int]) -> dict[int, list[np.ndarray]]:
        """Tensor index -> per sample, its values as (positions, features) float64 minus the zero point."""
        out: dict[int, list[np.ndarray]] = {t: [] for t in tensors}
        for rows in self.rows(model, tensors):
            for t, x in rows.items():
                out[t].append(x)
        return out

    def rows(self, model: bytes, tensors: Sequence[int]) -> Iterator[dict[int, np.ndarray]]:
        """Per sample, tensor index -> its (positions, features) values minus the zero point, positions thinned."""
        from ai_edge_litert.interpreter import Interpreter

        with warnings.catch_warnings():  # "intended for debugging purposes": keeping every tensor is the point
            warnings.simplefilter("ignore", UserWarning)
            interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
        interp.allocate_tensors()
        details = {d["index"]: d for d in interp.get_tensor_details()}
        feeds = interp.get_input_details()
        keep = max(1, MAX_ROWS // max(1, len(self.samples)))
        for sample in self.samples:
            for detail, array in zip(feeds, sample, strict=True):
                interp.set_tensor(detail["index"], _quantized(np.asarray(array), detail))
            interp.invoke()
            rows = {}
            for t in tensors:
                x = interp.get_tensor(t).astype(np.float64) - float(details[t]["quantization"][1])
                x = x.reshape(-1, x.shape[-1])
                if x.shape[0] > keep:
                    x = x[np.linspace(0, x.shape[0] - 1, keep).round().astype(np.int64)]
                rows[t] = x
            yield rows

    def layer_stats(self, model: bytes, op: Any) -> InputStats:
        """``op``'s input statistics in ``model`` (earlier layers edited), paired with the reference model's."""
        tensor = op.inputs[0]
        current = self.inputs(model, [tensor])[tensor]
        original = self.inputs(self.reference, [tensor])[tensor]
        stats = _stats(op.index, current)
        if stats.covariance is None:
            return InputStats(**{**stats.__dict__, "reference_mean": _mean(original)})
        x_new, x_old = np.concatenate(current), np.concatenate(original)
        cross = _centred(x_new).T @ _centred(x_old) / x_new.shape[0]
        return InputStats(**{**stats.__dict__, "cross": cross, "reference_mean": x_old.mean(axis=0)})


class _Moments:
    """Running sums of one input's rows: mean, mean square and (up to MAX_COVARIANCE_FEATURES) covariance."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0
        self.outer: np.ndarray | float | None = 0.0

    def add(self, x: np.ndarray) -> None:
        self.count += x.shape[0]
        self.total = self.total + x.sum(axis=0)
        self.squares = self.squares + (x * x).sum(axis=0)
        if x.shape[1] > MAX_COVARIANCE_FEATURES:
            self.outer = None
        elif self.outer is not None:
            self.outer = self.outer + x.T @ x

    def stats(self, op_index: int, samples: int) -> InputStats:
        mean = np.asarray(self.total) / self.count
        covariance = None
        if self.outer is not None:
            covariance = np.asarray(self.outer) / self.count - np.outer(mean, mean)
        return InputStats(op_index, mean, np.asarray(self.squares) / self.count, samples, covariance)


def _stats(op_index: int, per_sample: list[np.ndarray]) -> InputStats:
    moments = _Moments()
    for x in per_sample:
        moments.add(x)
    return moments.stats(op_index, len(per_sample))


def _mean(per_sample: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(per_sample).mean(axis=0)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


def _quantized(sample: np.ndarray, detail: dict) -> np.ndarray:
    from ..analyze.inference import quantize

    scale, zero = detail["quantization"]
    return quantize(sample.reshape(tuple(detail["shape"])), np.dtype(detail["dtype"]), scale, zero)


def element_weights(stats: InputStats, row_length: int) -> np.ndarray:
    """The importance of each element of one output channel's row ([kh, kw, in] flattened, in last)."""
    weights = np.maximum(stats.mean_square, 0.0) + 1e-6
    return np.tile(weights, row_length // weights.size) if row_length % weights.size == 0 else np.ones(row_length)


def bias_shift(new_rows: np.ndarray, old_rows: np.ndarray, stats: InputStats) -> np.ndarray:
    """Per output channel, the mean accumulator drift sum_j (C[o, j] E[x'_j] - W[o, j] E[x_j]) (int32, rounded).

    Without layer-by-layer statistics x' = x and this is sum_j dW[o, j] E[x_j]."""
    if new_rows.shape[1] % stats.mean.size:
        return np.zeros(new_rows.shape[0], dtype=np.int64)
    reps = new_rows.shape[1] // stats.mean.size
    now = np.tile(stats.mean, reps)
    before = np.tile(stats.reference_mean if stats.reference_mean is not None else stats.mean, reps)
    drift = new_rows.astype(np.float64) @ now - old_rows.astype(np.float64) @ before
    return np.round(drift).astype(np.int64)
