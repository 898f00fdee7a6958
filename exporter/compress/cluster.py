"""Weight clustering: every kernel holds at most K distinct values (shared centroids), K chosen by the user.

Why it pays on a microcontroller: flash holds int8 weights, and a kernel with 16 distinct values per
channel has at most 4 bits of entropy per weight, so the stored model compresses (gzip, or a
palette-aware flash format) where plain int8 does not. Per-channel int8 quantization maps K float
centroids to at most K int8 codes per channel, so the effect survives conversion — checked by
:func:`int8_distinct_values` on the converted model.

Clustering is k-means (1-D, per layer, linear initialisation as in tfmot's default) and fine-tuning
keeps it: assignments are frozen, and after every batch each cluster's weights are replaced by their
mean — the shared centroid moved by the cluster's average update, which is what training the
centroids directly does for SGD. No wrapper layer: the saved model holds ordinary kernels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError

log = logging.getLogger(__name__)

CLUSTERABLE = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D")


@dataclass(frozen=True)
class ClusterSpec:
    clusters: int = 16
    #: Kernels with fewer weights than this many per centroid are left alone (nothing to gain).
    min_weights_per_cluster: int = 8
    skip: tuple[str, ...] = ()
    iterations: int = 30

    def __post_init__(self) -> None:
        if not 2 <= self.clusters <= 256:
            raise UsageError(
                f"--cluster needs 2..256 centroids per kernel; received {self.clusters}.",
                hint="Pass --cluster 16 (4-bit weights) or --cluster 8.",
            )

    def describe(self) -> str:
        return f"weight clustering: {self.clusters} shared values per kernel (k-means, linear init)"

    def to_dict(self) -> dict[str, Any]:
        return {"clusters": self.clusters, "skip": list(self.skip), "description": self.describe()}


@dataclass
class ClusterReport:
    spec: ClusterSpec
    layers: dict[str, int] = field(default_factory=dict)  # name -> distinct values after clustering
    skipped: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # {"step", "accuracy", "detail"}
    accuracy_how: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "layers": dict(self.layers),
            "skipped": dict(self.skipped),
            "steps": list(self.steps),
            "accuracy_how": self.accuracy_how,
        }

    def summary(self) -> str:
        lines = [self.spec.describe()]
        lines += [f"{name}: {count} distinct kernel values" for name, count in self.layers.items()]
        lines += [f"left as is: {name} ({why})" for name, why in self.skipped.items()]
        for s in self.steps:
            acc = f", accuracy {s['accuracy']:.2%}" if s.get("accuracy") is not None else ""
            lines.append(f"{s['step']}{acc}" + (f" ({s['detail']})" if s.get("detail") else ""))
        if self.accuracy_how:
            lines.append(f"accuracy: {self.accuracy_how}")
        return "\n".join(lines)


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k,), assignment per value) of 1-D k-means with centroids spread linearly over the range."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    centroids = np.linspace(flat.min(), flat.max(), k)
    order = np.argsort(flat)
    ordered = flat[order]
    for _ in range(iterations):
        # 1-D: clusters are intervals; boundaries are midpoints between sorted centroids.
        centroids.sort()
        edges = (centroids[1:] + centroids[:-1]) / 2.0
        labels = np.searchsorted(edges, ordered)
        sums = np.bincount(labels, weights=ordered, minlength=k)
        counts = np.bincount(labels, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            centroids = updated
            break
        centroids = updated
    edges = (centroids[1:] + centroids[:-1]) / 2.0
    assignment = np.searchsorted(edges, flat)
    return centroids.astype(np.float32), assignment.astype(np.int32)


def _walk(model: Any) -> list[Any]:
    out: list[Any] = []
    for layer in getattr(model, "layers", None) or []:
        out.extend(_walk(layer) if getattr(layer, "layers", None) else [layer])
    return out


#: A Keras model counts as clustered (``--lut auto`` then LUT-compresses it for TFLite Micro) when at least
#: this share of its Conv/Dense kernel weights sit in kernels with at most 2**7 distinct float values (a
#: trained kernel has as many as it has weights). Judged on the float model, not the int8 file: VWW's int8
#: file holds channels of zeros (1 value) that a per-channel count would take for clustering.
CLUSTERED_SHARE = 0.5
#: Layer types whose kernels decide it (a QAT model's quantized layers expose their float kernel too).
CLUSTER_JUDGED = (
    "Conv2D",
    "DepthwiseConv2D",
    "Dense",
    "Conv1D",
    "QuantizedConv2D",
    "QuantizedDepthwiseConv2D",
    "QuantizedDense",
)


def is_clustered(model: Any) -> bool:
    """Most Conv/Dense kernel weights hold few distinct values: the model was clustered (edgeport compress
    --cluster, a recipe's cluster step, or tfmot's weight clustering)."""
    total = few = 0
    for layer in _walk(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or type(layer).__name__ not in CLUSTER_JUDGED:
            continue
        values = np.asarray(kernel)
        if values.size < 256:
            continue
        total += values.size
        if type(layer).__name__.startswith("Quantized"):  # QAT kept the clusters per output channel
            from .qat_hold import channel_clusters

            few += values.size if channel_clusters(values, type(layer).__name__) is not None else 0
        elif np.unique(values).size <= 128:
            few += values.size
    return total > 0 and few >= CLUSTERED_SHARE * total


def _kernels(model: Any, spec: ClusterSpec, report: ClusterReport) -> list[Any]:
    names = {layer.name for layer in _walk(model)}
    unknown = [n for n in spec.skip if n not in names]
    if unknown:
        raise UsageError(f"cluster skip names layers the model does not have: {', '.join(unknown)}.")
    chosen = []
    for layer in _walk(model):
        if type(layer).__name__ not in CLUSTERABLE or getattr(layer, "kernel", None) is None:
            continue
        size = int(np.prod(layer.kernel.shape))
        if layer.name in spec.skip:
            report.skipped[layer.name] = "skipped on request"
        elif size < spec.clusters * spec.min_weights_per_cluster:
            report.skipped[layer.name] = f"{size} weights: too few for {spec.clusters} clusters to save anything"
        else:
            chosen.append(layer)
    return chosen


def _share(layer: Any, assignment: np.ndarray, k: int) -> None:
    """Set every weight of a cluster to the cluster's current mean (the shared centroid)."""
    kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)
    flat = kernel.reshape(-1)
    counts = np.bincount(assignment, minlength=k)
    means = np.bincount(assignment, weights=flat, minlength=k) / np.maximum(counts, 1)
    layer.kernel.assign(means[assignment].reshape(kernel.shape).astype(np.float32))


def cluster_model(
    model: Any,
    spec: ClusterSpec | int,
    *,
    train: tuple[np.ndarray, np.ndarray] | None = None,
    eval: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 2e-4,
    seed: int = 0,
    verbose: bool = False,
) -> tuple[Any, ClusterReport]:
    """A clustered copy of ``model`` (fine-tuned with shared centroids when ``train`` is given) and its report."""
    import keras

    from . import finetune

    spec = ClusterSpec(clusters=spec) if isinstance(spec, int) else spec
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    report = ClusterReport(spec=spec)
    if eval is not None:
        report.accuracy_how = f"float Keras model, top-1 on {len(eval[0])} labelled evaluation samples"

    def measure() -> float | None:
        return finetune.accuracy(work, *eval) if eval is not None else None

    layers = _kernels(work, spec, report)
    if not layers:
        raise UsageError(
            f"Nothing to cluster: no Conv/Dense kernel has at least {spec.clusters * spec.min_weights_per_cluster} weights.",
            hint="Pass a smaller --cluster K.",
        )
    report.steps.append({"step": "original", "accuracy": measure(), "detail": ""})
    assignments = {}
    for layer in layers:
        centroids, assignment = kmeans_1d(layer.kernel.numpy(), spec.clusters, spec.iterations)
        layer.kernel.assign(centroids[assignment].reshape(tuple(layer.kernel.shape)))
        assignments[layer.name] = assignment
    report.steps.append({"step": "cluster", "accuracy": measure(), "detail": "no fine-tuning"})
    if train is not None:
        loss = _fine_tune(
            work, layers, assignments, spec.clusters, train, epochs, batch_size, learning_rate, seed, verbose
        )
        report.steps.append(
            {
                "step": "fine-tune",
                "accuracy": measure(),
                "detail": f"{epochs} epochs, centroids shared, loss {loss:.4f}",
            }
        )
    for layer in layers:
        report.layers[layer.name] = int(np.unique(layer.kernel.numpy()).size)
    final = keras.models.clone_model(work)
    final.set_weights(work.get_weights())
    return final, report


def _fine_tune(work, layers, assignments, k, train, epochs, batch_size, learning_rate, seed, verbose) -> float:
    import contextlib
    import sys

    import keras

    from . import finetune

    class ShareCentroids(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            for layer in layers:
                _share(layer, assignments[layer.name], k)

    keras.utils.set_random_seed(seed)
    x, y = train
    from_logits = not finetune.outputs_probabilities(work, x)
    work.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    stream = contextlib.redirect_stdout(sys.stderr) if verbose else contextlib.nullcontext()
    with stream:
        history = work.fit(
            x, finetune.class_labels(y), epochs=epochs, batch_size=batch_size, shuffle=True,
            verbose=1 if verbose else 0, callbacks=[ShareCentroids()],
        )  # fmt: skip
    for layer in layers:
        _share(layer, assignments[layer.name], k)
    return float((history.history.get("loss") or [float("nan")])[-1])


def int8_distinct_values(tflite: bytes) -> dict[str, int]:
    """Tensor name -> the largest number of distinct int8 values in any output channel of a constant weight.

    Reads the converted model (what the device stores), so it shows whether clustering survived
    quantization: a clustered K-centroid kernel must show at most K per channel.
    """
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(tflite)
    out: dict[str, int] = {}
    for op in graph.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D"):
            continue
        inputs = graph.op_inputs(op)
        if len(inputs) < 2:
            continue
        weight = inputs[1]
        data = graph.constant(weight)
        if data is None or str(data.dtype) != "int8":
            continue
        axis = 3 if op.name == "DEPTHWISE_CONV_2D" else 0
        channels = np.moveaxis(np.asarray(data), axis, 0).reshape(data.shape[axis], -1)
        out[weight.name] = max(int(np.unique(row).size) for row in channels)
    return out
