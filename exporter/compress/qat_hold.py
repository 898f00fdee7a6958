"""Keeping what earlier compression gave a layer while QAT trains it: clustered values, pruned zeros."""

from __future__ import annotations

from typing import Any

import numpy as np

#: A kernel holds clusters when every output channel has at most this many distinct values (and it is
#: large enough that a trained kernel would not): ``edgeport compress --cluster K`` goes up to 256.
MAX_HELD_VALUES = 256
#: A kernel was pruned when at least this share of its weights is exactly zero.
PRUNED_SHARE = 0.2


def held_structure(model: Any, report: Any) -> Any:
    """A Keras callback that keeps, after every batch, what earlier compression gave each quantized layer:
    clustered kernels their shared values (each value replaced by its cluster's mean, per output channel,
    so int8 keeps at most K values per channel for the LUT), pruned kernels their exact zeros. None when
    no layer has either."""
    import keras

    plans = []
    for layer in model.layers:
        if not hasattr(layer, "quantized_kernel"):
            continue
        kernel = layer.inner.kernel.numpy()
        channels = _channels_last(kernel, type(layer).__name__)
        zeros = channels == 0
        clustered = channel_clusters(kernel, type(layer).__name__, per_tensor=not layer.per_channel)
        if clustered is not None:
            plans.append((layer, clustered, None))
            report.held[layer.name] = "shared values"
        elif zeros.mean() >= PRUNED_SHARE:
            plans.append((layer, None, ~zeros))
            report.held[layer.name] = "zeros"
    if not plans:
        return None

    class HoldStructure(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            for layer, ids, keep in plans:
                kernel = layer.inner.kernel
                values = kernel.numpy().reshape(ids.shape if ids is not None else keep.shape)
                if ids is not None:
                    flat = ids.reshape(-1)
                    sums = np.bincount(flat, weights=values.reshape(-1).astype(np.float64))
                    counts = np.maximum(np.bincount(flat), 1)
                    values = (sums / counts)[flat].reshape(values.shape)
                else:
                    values = values * keep
                kernel.assign(values.reshape(kernel.shape).astype(np.float32))

    return HoldStructure()


def _channels_last(kernel: np.ndarray, kind: str) -> np.ndarray:
    """The kernel as (weights per output channel, output channels): TFLite's channel is the last axis
    (depthwise: input channel x multiplier, the last two)."""
    if kind == "QuantizedDepthwiseConv2D":
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


def channel_clusters(kernel: np.ndarray, kind: str, *, per_tensor: bool = False) -> np.ndarray | None:
    """One id per weight, unique per (output channel, value), when every channel holds few distinct values
    (a clustered kernel); None for a trained one. ``per_tensor``: one set of values for the whole kernel,
    as a per-tensor weight's LUT has one table (per-channel holding would multiply its values)."""
    kernel = np.asarray(kernel)
    channels = kernel.reshape(-1, 1) if per_tensor else _channels_last(kernel, kind)
    rows, count = channels.shape
    if rows < 8:
        return None
    ids = np.empty(channels.shape, dtype=np.int64)
    offset = 0
    for c in range(count):
        values, inverse = np.unique(channels[:, c], return_inverse=True)
        if values.size > MAX_HELD_VALUES or values.size * 4 > rows:
            return None
        ids[:, c] = inverse + offset
        offset += values.size
    return ids
