"""Channel (filter) pruning: remove whole Conv2D filters and rewire the layers that read them.

Zeros inside a dense kernel buy nothing on a dense kernel (see :mod:`exporter.compress.sparsity`);
a conv with half its filters gone is a smaller conv, and every runtime runs it faster. The model
is rebuilt from its config with fewer ``filters`` and the surviving weights sliced in, so the result
is an ordinary Keras model.

Which filters go: the smallest L1 norms (Li et al., 2017), each scaled by the |gamma|/sqrt(var+eps)
of a BatchNormalization that directly follows, since that is the filter's real output magnitude.
The channels of a pruned conv are followed through layers that keep channels (BatchNorm, activations,
pooling, padding, dropout, depthwise convs) to the layer that consumes them (Conv, Dense, Flatten ->
Dense, global pooling -> Dense). A conv whose output branches, is added/concatenated, or reaches the
model output is left alone, with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NotSupportedError

log = logging.getLogger(__name__)

#: Layers that keep the channel axis (last) one to one: channels pass through, weights (if any) are per channel.
_PASS = {
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "MaxPooling2D",
    "AveragePooling2D", "ZeroPadding2D", "Cropping2D", "Dropout", "SpatialDropout2D", "GaussianNoise",
    "UpSampling2D", "DepthwiseConv2D",
}  # fmt: skip
_GLOBAL_POOL = {"GlobalAveragePooling2D", "GlobalMaxPooling2D"}
_CONSUMERS = {"Conv2D", "Dense", "SeparableConv2D"}


@dataclass
class ChannelPlan:
    """Per pruned conv: the filters kept, and the chain of layers its channels flow through."""

    kept: dict[str, np.ndarray] = field(default_factory=dict)  # conv name -> kept filter indices
    chains: dict[str, list[str]] = field(default_factory=dict)  # conv name -> pass-through layers, then consumer
    skipped: dict[str, str] = field(default_factory=dict)
    removed: dict[str, tuple[int, int]] = field(default_factory=dict)  # conv -> (before, after)


def _consumers(model: Any) -> dict[str, list[Any]]:
    """Layer name -> layers that read its output (in this model's graph)."""
    result: dict[str, list[Any]] = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in getattr(node, "input_tensors", []):
                history = getattr(tensor, "_keras_history", None)
                if history is None:
                    continue
                producer = history.operation
                if layer not in result.setdefault(producer.name, []):
                    result[producer.name].append(layer)
    return result


def _output_layers(model: Any) -> set[str]:
    names = set()
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history.operation.name)
    return names


def _chain(model: Any, conv: Any, consumers: dict[str, list[Any]], outputs: set[str]) -> tuple[list[Any], str | None]:
    """(layers from conv's output to its consumer, consumer last) or ([], why not)."""
    chain: list[Any] = []
    current = conv
    while True:
        if current.name in outputs:
            return [], f"its channels reach the model output through {current.name}"
        readers = consumers.get(current.name, [])
        if len(readers) != 1:
            return [], f"its output feeds {len(readers)} layers (branches are not rewired)"
        nxt = readers[0]
        kind = type(nxt).__name__
        if len(getattr(nxt, "_inbound_nodes", [])) > 1:
            return [], f"{nxt.name} is shared"
        chain.append(nxt)
        current = nxt
        if kind in _CONSUMERS:
            return chain, None
        if kind == "Flatten" or kind in _GLOBAL_POOL:
            continue
        if kind in _PASS:
            if kind == "DepthwiseConv2D" and getattr(nxt, "depth_multiplier", 1) != 1:
                return [], f"{nxt.name} has depth_multiplier {nxt.depth_multiplier}"
            continue
        return [], f"its channels reach {nxt.name} ({kind}), which is not rewired"


def _filter_scores(conv: Any, chain: list[Any]) -> np.ndarray:
    kernel = np.asarray(conv.kernel.numpy())
    scores = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    if chain and type(chain[0]).__name__ == "BatchNormalization":
        bn = chain[0]
        gamma = np.asarray(bn.gamma.numpy()) if bn.gamma is not None else np.ones_like(scores)
        var = np.asarray(bn.moving_variance.numpy())
        scores = scores * np.abs(gamma) / np.sqrt(var + bn.epsilon)
    return scores


def plan_channels(model: Any, convs: list[str], ratio: float) -> ChannelPlan:
    """Choose the filters to keep in each named Conv2D (at least one each)."""
    plan = ChannelPlan()
    consumers, outputs = _consumers(model), _output_layers(model)
    by_name = {layer.name: layer for layer in model.layers}
    for name in convs:
        conv = by_name.get(name)
        if conv is None or type(conv).__name__ != "Conv2D":
            plan.skipped[name] = "not a top-level Conv2D layer (nested models are not rewired)"
            continue
        if getattr(conv, "groups", 1) != 1:
            plan.skipped[name] = f"grouped conv (groups={conv.groups})"
            continue
        chain, why = _chain(model, conv, consumers, outputs)
        if why:
            plan.skipped[name] = why
            continue
        consumer = chain[-1]
        if getattr(consumer, "groups", 1) != 1:
            plan.skipped[name] = f"its consumer {consumer.name} is a grouped conv"
            continue
        filters = int(conv.filters)
        keep = max(1, int(round(filters * (1.0 - ratio))))
        if keep >= filters:
            plan.skipped[name] = f"{filters} filters: nothing to remove at {ratio:.0%}"
            continue
        scores = _filter_scores(conv, chain)
        plan.kept[name] = np.sort(np.argsort(-scores, kind="stable")[:keep])
        plan.chains[name] = [layer.name for layer in chain]
        plan.removed[name] = (filters, keep)
    return plan


def apply_plan(model: Any, plan: ChannelPlan) -> Any:
    """A new model with the planned filters removed and every reader of them rewired."""
    import keras

    if not plan.kept:
        return model
    by_name = {layer.name: layer for layer in model.layers}
    out_keep: dict[str, np.ndarray] = dict(plan.kept)  # layer -> kept output channels
    in_keep: dict[str, np.ndarray] = {}  # layer -> kept input channels (or flattened rows for Dense)
    for conv, chain in plan.chains.items():
        kept = plan.kept[conv]
        channels = int(by_name[conv].filters)
        for name in chain:
            layer = by_name[name]
            kind = type(layer).__name__
            if kind == "Flatten":
                shape = tuple(layer.input.shape[1:])
                positions = int(np.prod(shape[:-1]))
                kept = (np.arange(positions)[:, None] * channels + kept[None, :]).ravel()
                channels = positions * channels
                continue
            in_keep[name] = kept
            if kind in _PASS:
                out_keep[name] = kept
    new_filters = {name: len(idx) for name, idx in plan.kept.items()}

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in new_filters:
            config["filters"] = new_filters[layer.name]
        return type(layer).from_config(config)

    try:
        rebuilt = keras.models.clone_model(model, clone_function=clone)
    except Exception as exc:
        raise NotSupportedError(
            f"Channel pruning could not rebuild the model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).",
            hint="Prune with --prune 0.5 (unstructured) instead, or name the convs to skip with --prune-skip.",
        ) from exc
    for new in rebuilt.layers:
        old = by_name.get(new.name)
        if old is None:
            continue
        weights = [np.asarray(w) for w in old.get_weights()]
        if weights:
            new.set_weights(_slice(type(old).__name__, weights, in_keep.get(old.name), out_keep.get(old.name), old))
    return rebuilt


def _slice(kind: str, weights: list[np.ndarray], keep_in: np.ndarray | None, keep_out: np.ndarray | None, layer: Any):
    """The layer's weights restricted to the kept input/output channels."""
    if kind in ("Conv2D", "Conv1D", "Conv3D", "Dense"):
        kernel = weights[0]
        if keep_in is not None:
            kernel = np.take(kernel, keep_in, axis=-2)
        if keep_out is not None:
            kernel = np.take(kernel, keep_out, axis=-1)
        rest = [np.take(w, keep_out, axis=-1) if keep_out is not None else w for w in weights[1:]]
        return [kernel, *rest]
    if kind == "DepthwiseConv2D":
        kernel = np.take(weights[0], keep_in, axis=-2) if keep_in is not None else weights[0]
        rest = [np.take(w, keep_in, axis=-1) if keep_in is not None else w for w in weights[1:]]
        return [kernel, *rest]
    if kind == "SeparableConv2D":
        depthwise, pointwise, *rest = weights
        if keep_in is not None:
            mult = depthwise.shape[-1]
            depthwise = np.take(depthwise, keep_in, axis=-2)
            rows = (keep_in[:, None] * mult + np.arange(mult)[None, :]).ravel()
            pointwise = np.take(pointwise, rows, axis=-2)
        return [depthwise, pointwise, *rest]
    if keep_out is not None:  # BatchNormalization, PReLU: per-channel vectors on the last axis
        return [np.take(w, keep_out, axis=-1) for w in weights]
    return weights
