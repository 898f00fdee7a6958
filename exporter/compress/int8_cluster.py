"""Clustering in the int8 domain: at most K int8 values per output channel, chosen after the scales are known.

Clustering float kernels before conversion (:mod:`exporter.compress.cluster`) does not survive int8
exactly: the converter's rounding can split one centroid into neighbouring int8 codes, and a LUT
index width is only as small as the largest channel's distinct-value count. Here the values are
chosen on the int8 model itself, per value table (per output channel along the tensor's quantized
dimension; per tensor when it has one scale), so the file holds at most K distinct values per
channel, checked after rewriting.

The choice is exact and deterministic: an int8 channel has at most 256 distinct levels, and the
best K centroids under squared error partition the sorted levels into contiguous runs (each level
goes to its nearest centroid), each run's best integer centroid being its rounded mean. Dynamic
programming over the value histogram finds the optimal partition (O(K m^2) for m distinct levels),
no random starts. Only tensors :func:`exporter.compress.lut_rules.tensor_rule` allows are touched,
in place: same buffer, same size, every other byte of the file unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import UsageError
from .int8_refit import refit_to_output
from .int8_stats import MAX_SAMPLES, ActivationProbe, InputStats, bias_shift, element_weights, input_stats, stat_ops
from .lut_rules import ConstTensor, read_constants, tensor_rule


@dataclass(frozen=True)
class TensorCluster:
    """What clustering did to one tensor."""

    name: str
    op: str
    shape: tuple[int, ...]
    channels: int
    #: Largest number of distinct int8 values in one channel, before and after.
    distinct_before: int
    distinct_after: int
    changed: int
    mean_abs_error_lsb: float
    mean_abs_error: float
    #: Clustered with each weight's error weighted by its input's E[x^2] (exporter.compress.int8_stats).
    weighted: bool = False
    #: Value tables and indices refitted to the output error under the input covariance (refit_to_output).
    refit: bool = False
    #: Statistics taken with the earlier layers already clustered (ActivationProbe).
    layered: bool = False
    #: Output channels whose int32 bias absorbed the clustering's mean output shift.
    bias_corrected: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Int8ClusterReport:
    """Per tensor what changed, what was left alone and why, and totals."""

    clusters: int
    tensors: tuple[TensorCluster, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def weights(self) -> int:
        """Weights in the clustered tensors."""
        return sum(math.prod(t.shape) for t in self.tensors)

    @property
    def changed(self) -> int:
        return sum(t.changed for t in self.tensors)

    @property
    def mean_abs_error_lsb(self) -> float:
        n = self.weights
        return sum(t.mean_abs_error_lsb * math.prod(t.shape) for t in self.tensors) / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters,
            "tensors": [t.to_dict() for t in self.tensors],
            "skipped": dict(self.skipped),
            "weights": self.weights,
            "changed": self.changed,
            "mean_abs_error_lsb": self.mean_abs_error_lsb,
        }

    def summary(self) -> str:
        worst = max((t.distinct_after for t in self.tensors), default=0)
        weighted = sum(t.weighted for t in self.tensors)
        refit = sum(t.refit for t in self.tensors)
        layered = " (layer by layer, earlier layers already clustered)" if any(t.layered for t in self.tensors) else ""
        how = (
            f"; {weighted} weighted by their inputs' E[x^2] on the calibration data{layered}, {refit} refitted to "
            f"the output error under the input covariance, "
            f"{sum(t.bias_corrected for t in self.tensors):,} output channels' biases corrected for the mean shift"
            if weighted
            else ""
        )
        return (
            f"int8 clustering K={self.clusters}: {len(self.tensors)} tensors, {self.changed:,} of "
            f"{self.weights:,} weights moved (mean |error| {self.mean_abs_error_lsb:.3f} LSB), "
            f"at most {worst} values per channel{how}; {len(self.skipped)} left alone"
        )


def optimal_levels(values: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """For sorted distinct integer ``values`` with ``counts``, the integer centroid each value maps to.

    Minimises sum(count * (value - centroid)^2) over at most ``k`` integer centroids, exactly: the
    optimal clusters are contiguous runs of the sorted values, found by dynamic programming; a
    run's best integer centroid is its mean rounded half up (deterministic on ties).
    """
    m = len(values)
    if m <= k:
        return values.copy()
    v = values.astype(np.float64)
    c = counts.astype(np.float64)
    s0 = np.concatenate(([0.0], np.cumsum(c)))
    s1 = np.concatenate(([0.0], np.cumsum(c * v)))
    s2 = np.concatenate(([0.0], np.cumsum(c * v * v)))
    i = np.arange(m)[:, None]  # run start (inclusive)
    j = np.arange(m)[None, :]  # run end (inclusive)
    n0, n1, n2 = s0[j + 1] - s0[i], s1[j + 1] - s1[i], s2[j + 1] - s2[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.floor(n1 / n0 + 0.5)
    cost = n2 - 2 * centre * n1 + centre * centre * n0
    cost = np.where(j >= i, cost, np.inf)  # cost[i, j]: values i..j in one run
    best = cost[0].copy()  # best[j]: values 0..j in one run
    choice = np.zeros((k, m), dtype=np.int64)
    for level in range(1, k):
        # best'[j] = min over split s (values 0..s-1 in `level` runs, s..j in one run)
        total = best[:-1, None] + cost[1:, :]  # rows: s-1 = 0..m-2, i.e. split s = 1..m-1
        arg = np.argmin(total, axis=0)
        candidate = total[arg, np.arange(m)]
        better = candidate < best
        choice[level] = np.where(better, arg + 1, 0)
        best = np.where(better, candidate, best)
    out = np.empty(m, dtype=np.int64)
    end, level = m - 1, k - 1
    while end >= 0:
        while level > 0 and choice[level, end] == 0:
            level -= 1
        start = int(choice[level, end]) if level > 0 else 0
        out[start : end + 1] = int(centre[start, end])
        end, level = start - 1, level - 1
    return out


def cluster_channels(rows: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Each row of int8 ``rows`` ([channels, elements]) rounded to at most ``k`` int8 values (a copy).

    ``weights`` (one per element of a row) makes it a weighted k-means: an element's squared error
    counts ``weights[j]`` times (the importance of its input feature)."""
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        values, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        if weights is not None:
            counts = np.bincount(inverse, weights=weights, minlength=len(values))
        levels = optimal_levels(values.astype(np.int64), counts, k)
        out[r] = levels[inverse].astype(rows.dtype)
    return out


def _matches(name: str, skip: Iterable[str]) -> bool:
    """A skip entry matches the exact tensor name or one of its '/'-separated parts (a layer name)."""
    parts = set(name.split("/"))
    return any(s == name or s in parts for s in skip)


def cluster_int8(
    model: bytes,
    clusters: int,
    *,
    skip: Iterable[str] = (),
    stats: Mapping[int, InputStats] | None = None,
    probe: ActivationProbe | None = None,
) -> tuple[bytes, Int8ClusterReport]:
    """Rewrite every LUT-eligible constant int8 tensor of ``model`` to at most ``clusters`` values per channel.

    Eligible: int8, constant, and every reader allowed by :func:`tensor_rule` (so the tensor can
    later be LUT-compressed in the layout the rule gives). The channels are the rule's value tables.
    ``skip`` names tensors (or layers: a '/'-separated part of a tensor name) to leave alone. Returns
    the new model (same length; only those tensors' bytes differ, and with statistics their ops' int32
    biases) and the report. ``stats`` (:func:`exporter.compress.int8_stats.input_stats`, by weight tensor
    index) weights each weight's error by its input's E[x^2], refits the values to the output error where
    the input covariance is known, and moves the mean output shift into the bias (exact integer units).
    ``probe`` (an :class:`~exporter.compress.int8_stats.ActivationProbe` of ``model``) instead takes each
    layer's statistics on the model with the earlier layers already clustered, in execution order. Raises
    :class:`UsageError` for ``clusters`` outside 2..256 and :class:`InputModelError` for a bad model.
    """
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not 2 <= clusters <= 256:
        raise UsageError(
            f"int8 clustering needs 2..256 values per channel; received {clusters!r}.",
            hint="Pass 16 (4-bit LUT indices), 8 or 4.",
        )
    skip = tuple(skip)
    out = bytearray(model)
    done: list[TensorCluster] = []
    skipped: dict[str, str] = {}
    by_buffer: dict[int, list[ConstTensor]] = {}
    constants = read_constants(model)
    for tensor in constants:
        if tensor.dtype == "int8":
            by_buffer.setdefault(tensor.buffer, []).append(tensor)
    readers = {op.inputs[1]: op for op in stat_ops(model)} if probe is not None else {}
    in_order = sorted(by_buffer.values(), key=lambda a: min((u.op_index for u in a[0].uses), default=0))
    for aliases in in_order:
        tensor = aliases[0]
        reason = _refusal(aliases, skip)
        if reason:
            skipped[tensor.name] = reason
            continue
        values = tensor.array(model)
        rows = tensor.channels(values)
        if len(aliases) > 1:
            seen = None
        elif tensor.index in readers:
            seen = probe.layer_stats(bytes(out), readers[tensor.index])  # type: ignore[union-attr]
        else:
            seen = (stats or {}).get(tensor.index)
        weights = element_weights(seen, rows.shape[1]) if seen is not None else None
        new_rows = cluster_channels(rows, clusters, weights)
        refit = _refit(rows, new_rows, clusters, seen, tensor)
        if refit is not None:
            new_rows = refit
        new = _unrows(new_rows, tensor)
        out[tensor.offset : tensor.offset + tensor.nbytes] = new.tobytes()
        corrected = _correct_bias(out, constants, seen, tensor, new, values) if seen else 0
        described = _describe(tensor, rows, new_rows)
        done.append(
            replace(
                described,
                weighted=seen is not None,
                refit=refit is not None,
                layered=probe is not None and seen is not None,
                bias_corrected=corrected,
            )
        )
    _check(bytes(model), bytes(out), clusters, done)
    return bytes(out), Int8ClusterReport(clusters, tuple(done), skipped)


#: Layer by layer costs two model runs per clustered layer and sample; above this many runs in all (AD:
#: 10 layers x 196 samples) the statistics are taken in one pass of the unclustered model instead.
LAYERED_MAX_RUNS = 2000


def cluster_on_calibration(
    model: bytes, arrays: Sequence[np.ndarray], clusters: int, *, skip: Iterable[str] = ()
) -> tuple[bytes, Int8ClusterReport]:
    """``model`` clustered to ``clusters`` values per channel with its calibration data's statistics (layer by
    layer when that takes at most :data:`LAYERED_MAX_RUNS` runs, else one pass); returns it and the report."""
    count = min(MAX_SAMPLES, int(arrays[0].shape[0]))
    samples = [[a[i : i + 1] for a in arrays] for i in range(count)]
    if len(stat_ops(model)) * count <= LAYERED_MAX_RUNS:
        return cluster_int8(model, clusters, skip=skip, probe=ActivationProbe(model, samples))
    return cluster_int8(model, clusters, skip=skip, stats=input_stats(model, samples))


#: Why a tensor clustering could take stays exact (:func:`cluster_where_tables_pay`).
NOT_WORTH_A_TABLE = "left exact: as a lookup table it would not make the file smaller"


def cluster_where_tables_pay(
    model: bytes, arrays: Sequence[np.ndarray], clusters: int, *, max_decoded_bytes: int | None = None
) -> tuple[bytes, Int8ClusterReport]:
    """:func:`cluster_on_calibration`, keeping exact every tensor a lookup table would not shrink.

    Clustering costs accuracy and buys flash only through TFLite Micro's LUT compression, which stores a
    tensor compressed only when its indices and value tables take fewer bytes than its int8 values. On VWW
    at K=16, 19 of the 28 clustered tensors stayed int8 (small early filters, depthwise filters with 9
    weights per channel): clustering them lost precision for nothing. The model is clustered, the LUT
    compressor (:func:`exporter.compress.lut.lut_compress`, native: call this in a child) says which
    tensors it would store compressed (under ``max_decoded_bytes``, --lut-max-decoded, as the export will
    compress), and the clustering is redone from ``model`` with the others skipped. The compressor sees
    the file as TFLite Micro targets ship it, zero points shared (exporter.convert.compact).
    """
    from ..convert.compact import share_zero_points
    from .lut import lut_compress

    clustered, report = cluster_on_calibration(model, arrays, clusters)
    _, lut = lut_compress(share_zero_points(clustered)[0], max_decoded_bytes=max_decoded_bytes)
    stored = {t.name for t in lut.compressed}
    idle = [t.name for t in report.tensors if t.name not in stored]
    if not idle or not stored:
        return clustered, report
    clustered, report = cluster_on_calibration(model, arrays, clusters, skip=idle)
    for name in idle:
        report.skipped[name] = NOT_WORTH_A_TABLE
    return clustered, report


def _refit(
    rows: np.ndarray, clustered: np.ndarray, k: int, seen: InputStats | None, tensor: ConstTensor
) -> np.ndarray | None:
    """The clustered rows refitted to the output error, when the input covariance matches the rows' layout:
    one row per output channel of J inputs, or one per-tensor table over [channels, J]."""
    if seen is None or seen.covariance is None:
        return None
    width = seen.covariance.shape[0]
    if rows.shape[1] == width:
        return refit_to_output(rows, clustered, k, seen.covariance, seen.cross)
    if rows.shape[0] == 1 and tensor.shape and rows.size == tensor.shape[0] * width:
        split = (tensor.shape[0], width)
        refit = refit_to_output(
            rows.reshape(split), clustered.reshape(split), k, seen.covariance, seen.cross, shared=True
        )
        return refit.reshape(rows.shape)
    return None


def _correct_bias(
    out: bytearray,
    constants: Sequence[ConstTensor],
    seen: InputStats,
    tensor: ConstTensor,
    new: np.ndarray,
    old: np.ndarray,
) -> int:
    """Subtract the clustering's mean accumulator shift from the op's int32 bias, when that bias is its alone."""
    bias = next(
        (
            c
            for c in constants
            if c.dtype == "int32"
            and len(c.uses) == 1
            and c.uses[0].op_index == seen.op_index
            and c.uses[0].position == 2
            and c.shared is None
        ),
        None,
    )
    if bias is None or bias.size != tensor.shape[0]:
        return 0
    per_output = (tensor.shape[0], -1)  # FC and CONV_2D filters: output channels first, whatever the layout
    shift = bias_shift(new.astype(np.int64).reshape(per_output), old.astype(np.int64).reshape(per_output), seen)
    values = bias.array(bytes(out)).astype(np.int64) - shift
    info = np.iinfo(np.int32)
    out[bias.offset : bias.offset + bias.nbytes] = np.clip(values, info.min, info.max).astype("<i4").tobytes()
    return int(np.count_nonzero(shift))


def max_distinct_per_channel(tensor: ConstTensor, model: bytes) -> int:
    """The largest count of distinct values in one of ``tensor``'s value tables (its rule's channels)."""
    rows = tensor.channels(tensor.array(model))
    return max(int(np.unique(row).size) for row in rows)


def _refusal(aliases: list[ConstTensor], skip: tuple[str, ...]) -> str | None:
    for tensor in aliases:
        if _matches(tensor.name, skip):
            return "skipped by request"
        rule = tensor_rule(tensor)
        if not rule.allowed:
            return rule.reason
    if len({(t.channel_axis, t.shape) for t in aliases}) > 1:
        return "its buffer is shared by tensors of different layouts"
    return None


def _unrows(rows: np.ndarray, tensor: ConstTensor) -> np.ndarray:
    axis = tensor.channel_axis
    if axis is None:
        return rows.reshape(tensor.shape)
    moved = (tensor.shape[axis], *tensor.shape[:axis], *tensor.shape[axis + 1 :])
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), 0, axis))


def _describe(tensor: ConstTensor, rows: np.ndarray, new_rows: np.ndarray) -> TensorCluster:
    diff = np.abs(rows.astype(np.int32) - new_rows.astype(np.int32))
    scales = np.asarray(tensor.scales or (1.0,), dtype=np.float64)
    per_row = diff.mean(axis=1) * (scales if len(scales) == len(rows) else scales[0])
    return TensorCluster(
        name=tensor.name,
        op=",".join(sorted({u.op for u in tensor.uses})),
        shape=tensor.shape,
        channels=len(rows),
        distinct_before=max(int(np.unique(r).size) for r in rows),
        distinct_after=max(int(np.unique(r).size) for r in new_rows),
        changed=int(np.count_nonzero(diff)),
        mean_abs_error_lsb=float(diff.mean()),
        mean_abs_error=float(per_row.mean()),
    )


def _check(before: bytes, after: bytes, k: int, done: list[TensorCluster]) -> None:
    """Re-read the rewritten model: same length, and every clustered channel within ``k`` values."""
    if len(before) != len(after):
        raise AssertionError("int8 clustering changed the model's length")
    names = {t.name for t in done}
    for tensor in read_constants(after):
        if tensor.name in names and tensor.dtype == "int8":
            worst = max_distinct_per_channel(tensor, after)
            if worst > k:
                raise AssertionError(f"{tensor.name} kept {worst} values in a channel after clustering to {k}")
