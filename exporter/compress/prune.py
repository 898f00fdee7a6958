"""Weight masks for Keras 3 models: magnitude (per-layer or global threshold), N:M, and the schedule.

Pruning here is plain numpy on the kernels: tfmot's wrappers accept no Keras 3 model, and a mask is
all a wrapper really adds. Masks are kept as arrays beside the model and re-applied after every
training step (:mod:`exporter.compress.finetune`), so the saved model holds exact zeros and nothing
else: any converter, runtime or compressor sees ordinary weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from .spec import PruneSpec

log = logging.getLogger(__name__)

#: Layers whose ``kernel`` is pruned. SeparableConv2D (two kernels) and recurrent layers are left dense.
PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D")
_CONV = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D")


@dataclass(frozen=True)
class Target:
    """A layer chosen for pruning (``layer`` is the live Keras layer)."""

    name: str
    kind: str
    layer: Any

    @property
    def kernel(self) -> Any:
        return self.layer.kernel


def flat_layers(model: Any) -> list[Any]:
    """Every layer in model order, nested models flattened (pruning reaches inside backbones)."""
    out: list[Any] = []
    for layer in getattr(model, "layers", None) or []:
        if getattr(layer, "layers", None):
            out.extend(flat_layers(layer))
        else:
            out.append(layer)
    return out


def select_targets(
    model: Any, spec: PruneSpec, kinds: tuple[str, ...] = PRUNABLE
) -> tuple[list[Target], dict[str, str]]:
    """(layers to prune, layer name -> why it is left alone) for ``spec``'s skip rules."""
    candidates = [layer for layer in flat_layers(model) if type(layer).__name__ in PRUNABLE]
    known = {layer.name for layer in candidates}
    unknown = [name for name in spec.skip if name not in {layer.name for layer in flat_layers(model)}]
    if unknown:
        raise UsageError(
            f"--prune-skip names layer{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)} "
            f"that the model does not have.",
            hint=f"Prunable layers: {', '.join(sorted(known)) or 'none'}.",
        )
    skipped: dict[str, str] = {}
    if spec.default_skips and candidates:
        convs = [layer for layer in candidates if type(layer).__name__ in _CONV]
        if convs:
            skipped[convs[0].name] = "first conv, skipped by default: few weights, every later feature depends on it"
        last = candidates[-1]
        if last.name not in skipped:
            skipped[last.name] = "classifier, skipped by default: the last layer has few weights per output class"
    for name in spec.skip:
        skipped.setdefault(name, "listed in --prune-skip")
    targets = []
    for layer in candidates:
        kind = type(layer).__name__
        if layer.name in skipped:
            continue
        if kind not in kinds:
            skipped[layer.name] = f"{kind} is not pruned by {spec.method}"
            continue
        targets.append(Target(layer.name, kind, layer))
    return targets, skipped


def magnitude_masks(targets: list[Target], sparsity: float, scope: str = "layer") -> dict[str, np.ndarray]:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights, per layer or over all targets at once.

    A global threshold prunes big, redundant layers harder than small ones at the same overall
    sparsity; per-layer keeps every layer at the same fraction (safer for layers with few weights).
    """
    kernels = {t.name: np.asarray(t.kernel.numpy()) for t in targets}
    masks: dict[str, np.ndarray] = {}
    if scope == "global" and kernels:
        flat = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
        count = int(round(sparsity * flat.size))
        keep = np.ones(flat.size, dtype=bool)
        keep[np.argsort(flat, kind="stable")[:count]] = False
        offset = 0
        for name, kernel in kernels.items():
            masks[name] = keep[offset : offset + kernel.size].reshape(kernel.shape)
            offset += kernel.size
        return masks
    for name, kernel in kernels.items():
        count = int(round(sparsity * kernel.size))
        keep = np.ones(kernel.size, dtype=bool)
        keep[np.argsort(np.abs(kernel).ravel(), kind="stable")[:count]] = False
        masks[name] = keep.reshape(kernel.shape)
    return masks


def nm_mask(kernel: np.ndarray, kind: str, n: int = 2, m: int = 4) -> np.ndarray | None:
    """Keep the ``n`` largest of every ``m`` consecutive input-channel weights; None when ``in % m != 0``.

    Input channels are the axis sparse tensor cores and Arm's N:M kernels group along (the reduction
    axis): Keras kernels are ``(..., in, out)`` for Conv and ``(in, out)`` for Dense.
    """
    if kind == "DepthwiseConv2D" or kernel.ndim < 2 or kernel.shape[-2] % m != 0:
        return None
    moved = np.moveaxis(kernel, -2, -1)  # (..., out, in)
    groups = np.abs(moved).reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(groups, axis=-1, kind="stable")
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., : m - n], False, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, -2)


def nm_masks(targets: list[Target], n: int, m: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    masks, skipped = {}, {}
    for t in targets:
        mask = nm_mask(np.asarray(t.kernel.numpy()), t.kind, n, m)
        if mask is None:
            skipped[t.name] = f"{n}:{m} needs input channels in groups of {m} ({t.kind} kernel {tuple(t.kernel.shape)})"
        else:
            masks[t.name] = mask
    return masks, skipped


def masks_for(targets: list[Target], spec: PruneSpec, sparsity: float | None = None) -> dict[str, np.ndarray]:
    """The masks ``spec`` asks for, at ``sparsity`` (a schedule's current value) or the final one."""
    if spec.method == "n:m":
        return nm_masks(targets, spec.n, spec.m)[0]
    return magnitude_masks(targets, spec.sparsity if sparsity is None else sparsity, spec.scope)


def apply_masks(targets: list[Target], masks: dict[str, np.ndarray]) -> None:
    """Multiply each target kernel by its mask in place (weights outside the mask become exact zeros)."""
    for t in targets:
        mask = masks.get(t.name)
        if mask is not None:
            t.kernel.assign(np.asarray(t.kernel.numpy()) * mask)


def polynomial_sparsity(step: int, begin: int, end: int, initial: float, final: float, power: float = 3.0) -> float:
    """Zhu & Gupta's schedule: prune fast while many weights are redundant, slowly near the target.

    ``s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power``, clamped to [begin, end].
    """
    if end <= begin:
        return final
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** power


def round_targets(final: float, rounds: int, power: float = 3.0) -> list[float]:
    """Target sparsity after each prune->retrain round, on the same polynomial curve."""
    return [polynomial_sparsity(r, 0, rounds, 0.0, final, power) for r in range(1, rounds + 1)]


def kernel_sparsity(targets: list[Target]) -> float:
    """Fraction of exact zeros over the targets' kernels."""
    total = sum(int(np.prod(t.kernel.shape)) for t in targets)
    zeros = sum(int(np.sum(np.asarray(t.kernel.numpy()) == 0)) for t in targets)
    return zeros / total if total else 0.0
