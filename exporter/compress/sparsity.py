"""Find sparsity in a model, check it survived int8 conversion, and say what it buys on each target.

A pruned model is only as small as the toolchain after it makes it: a .tflite stores every weight
as a dense int8, zero or not, so the file is exactly as large as the dense one. What sparsity can
buy, target by target:

- any download or OTA update that is compressed (gzip, APK/AAB delivery): a smaller transfer;
- Ethos-U: Vela's weight encoder compresses zero runs, so the flash image itself shrinks;
- latency: only where a kernel skips zeros. LiteRT's int8 kernels (builtin and XNNPACK) are dense;
  XNNPACK's sparse inference is float-only and needs DENSIFY-encoded weights in a specific
  MobileNet-like subgraph (measured in benchmarks/pruning_results.md). TFLite Micro, CMSIS-NN and
  the Edge TPU have no sparse kernels.

The "dense-equivalent" baseline every saving is measured against is the same .tflite with its zero
weights refilled from the tensor's own non-zero values (seeded): same ops, same sizes, same value
distribution, no zeros, so the difference is the sparsity and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analyze.compressed import HOW_BEST, HOW_GZIP9, CompressedSize, gzip9_size
from ..analyze.memo import content_key, memo

log = logging.getLogger(__name__)

WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
#: Below this zero fraction over the weight tensors, a model is reported as dense (no section).
SPARSE_MIN = 0.10

# --- Keras side -------------------------------------------------------------------------------------


def keras_sparsity(model: Any) -> dict[str, Any]:
    """Per prunable layer: zero fraction and pattern (dense, 2:4, unstructured); totals over them."""
    from .prune import PRUNABLE, flat_layers, nm_mask

    rows, total, zeros = [], 0, 0
    for layer in flat_layers(model):
        kind = type(layer).__name__
        if kind not in PRUNABLE:
            continue
        kernel = np.asarray(layer.kernel.numpy())
        n_zero = int(np.sum(kernel == 0))
        total += kernel.size
        zeros += n_zero
        rows.append(
            {
                "layer": layer.name,
                "class": kind,
                "weights": int(kernel.size),
                "zeros": n_zero,
                "sparsity": round(n_zero / kernel.size, 4),
                "pattern": _pattern(kernel, kind, nm_mask),
            }
        )
    return {"layers": rows, "weights": total, "zeros": zeros, "sparsity": round(zeros / total, 4) if total else 0.0}


def _pattern(kernel: np.ndarray, kind: str, nm_mask: Any) -> str:
    fraction = float(np.mean(kernel == 0))
    if fraction < 0.01:
        return "dense"
    mask = nm_mask(kernel, kind, 2, 4)
    if mask is not None and fraction >= 0.49:
        moved = np.moveaxis(kernel == 0, -2, -1)
        groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4).sum(axis=-1)
        if np.all(groups >= 2):
            return "2:4"
    return "unstructured"


# --- TFLite side ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightTensor:
    op: str
    op_index: int
    tensor: int
    name: str
    layer: str | None
    shape: tuple[int, ...]
    zeros: int
    size: int
    zero_point: int


def weight_tensors(graph: Any) -> list[WeightTensor]:
    """The constant weight tensor of every CONV/DEPTHWISE/FC op, with its count of quantized zeros."""
    result = []
    for op in graph.ops:
        position = WEIGHT_OPS.get(op.name)
        if position is None or position >= len(op.inputs) or op.inputs[position] < 0:
            continue
        tensor = graph.tensor(op.inputs[position])
        data = graph.constant(tensor)
        if data is None:
            continue
        zp = int(tensor.zero_point[0]) if tensor.zero_point else 0
        result.append(
            WeightTensor(
                op=op.name, op_index=op.index, tensor=tensor.index, name=tensor.name, layer=graph.layer_of_op(op),
                shape=tuple(data.shape), zeros=int(np.sum(data == zp)), size=int(data.size), zero_point=zp,
            )
        )  # fmt: skip
    return result


def tflite_sparsity(graph: Any) -> dict[str, Any]:
    tensors = weight_tensors(graph)
    total = sum(t.size for t in tensors)
    zeros = sum(t.zeros for t in tensors)
    return {
        "weight_tensors": len(tensors),
        "weights": total,
        "zeros": zeros,
        "sparsity": round(zeros / total, 4) if total else 0.0,
    }


def _to_tflite_layout(kernel: np.ndarray, kind: str, target_shape: tuple[int, ...]) -> np.ndarray | None:
    """A Keras kernel (or mask) in the layout the converter writes for its op, or None if unknown."""
    if kind == "Dense":
        out = kernel.T
    elif kind == "Conv2D":
        out = kernel.transpose(3, 0, 1, 2)
    elif kind == "Conv1D":
        out = kernel.transpose(2, 0, 1)[:, None]
    elif kind == "DepthwiseConv2D":
        out = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)[None]
    else:
        return None
    return out if tuple(out.shape) == tuple(target_shape) else None


def zeros_survival(graph: Any, model: Any) -> dict[str, Any]:
    """Of the exact zeros in the Keras kernels, how many are exact zeros (the zero point) in the int8 weights.

    Positions are compared after moving the Keras kernel into the op's layout; BatchNorm folding scales
    whole output channels, so it keeps zeros zero. A layer whose op cannot be matched is counted by totals.
    """
    from .prune import PRUNABLE, flat_layers

    tensors = weight_tensors(graph)
    by_layer: dict[str, list[WeightTensor]] = {}
    for t in tensors:
        if t.layer:
            by_layer.setdefault(t.layer, []).append(t)
    rows, float_zeros, kept, unmatched = [], 0, 0, []
    for layer in flat_layers(model):
        kind = type(layer).__name__
        if kind not in PRUNABLE:
            continue
        kernel = np.asarray(layer.kernel.numpy())
        zero_mask = kernel == 0
        n_float = int(zero_mask.sum())
        if n_float == 0:
            continue
        # A conv fused with its BatchNorm/activation is often attributed to those layers: fall back to the
        # weight tensor whose name carries the layer's scope, then to the only tensor of the right shape.
        candidates = by_layer.get(layer.name) or [
            t for t in tensors if f"/{layer.name}/" in t.name or f"/{layer.name}_" in t.name
        ]
        if not candidates:
            shaped = [t for t in tensors if _to_tflite_layout(zero_mask, kind, t.shape) is not None]
            candidates = shaped if len(shaped) == 1 else []
        survived, how = None, "no matching op"
        for t in candidates:
            placed = _to_tflite_layout(zero_mask, kind, t.shape)
            if placed is not None:
                q = graph.constant(t.tensor)
                survived, how = int(np.sum(q[placed] == t.zero_point)), f"position by position ({t.op} {t.name})"
                break
        if survived is None:
            unmatched.append(layer.name)
        else:
            float_zeros += n_float
            kept += survived
        rows.append({"layer": layer.name, "float_zeros": n_float, "int8_zeros": survived, "how": how})
    return {
        "layers": rows,
        "float_zeros": float_zeros,
        "survived": kept,
        "fraction": round(kept / float_zeros, 6) if float_zeros else None,
        "unmatched_layers": unmatched,
        "how": "Keras kernel zeros vs int8 weight values equal to the zero point, same positions",
    }


def _compressed_sizes(model: bytes, dense_twin: bytes, graph: Any) -> dict[str, Any]:
    """gzip -9 and edgeport's .tflite.gz, for the file and for its weight bytes, against the dense twin."""
    from ..verify.graph import TFLiteGraph

    pruned, dense = CompressedSize.of(model), CompressedSize.of(dense_twin)
    weights = gzip9_size(_weight_bytes(graph))
    dense_weights = gzip9_size(_weight_bytes(TFLiteGraph.from_bytes(dense_twin)))
    return {
        "bytes": len(model),
        "gzip_bytes": pruned.gzip9,
        "dense_equivalent_gzip_bytes": dense.gzip9,
        "gzip_saving": round(1.0 - pruned.gzip9 / dense.gzip9, 4),
        "best_gzip_bytes": pruned.best,
        "dense_equivalent_best_gzip_bytes": dense.best,
        "best_gzip_saving": round(1.0 - pruned.best / dense.best, 4),
        "best_gzip_strategy": pruned.strategy,
        # The weight bytes alone: what the saving tends to for large models, where weights are the whole file.
        "weights_gzip_bytes": weights,
        "dense_equivalent_weights_gzip_bytes": dense_weights,
        "weights_gzip_saving": round(1.0 - weights / max(1, dense_weights), 4),
    }


def _weight_bytes(graph: Any) -> bytes:
    return b"".join(graph.constant(t.tensor).tobytes() for t in weight_tensors(graph))


def refill_zeros(blob: bytes, graph: Any, seed: int = 0) -> tuple[bytes, int]:
    """``blob`` with the zero weights of sparse weight tensors replaced by that tensor's own non-zero values.

    Returns (new bytes, weights refilled). The buffer is located by its exact bytes in the file;
    a tensor whose bytes are not found once is left as it is.
    """
    rng = np.random.default_rng(seed)
    out = bytearray(blob)
    refilled = 0
    for t in weight_tensors(graph):
        if t.zeros == 0 or t.zeros / t.size < 0.05:
            continue
        data = graph.constant(t.tensor)
        raw = data.tobytes()
        start = blob.find(raw)
        if start < 0 or blob.find(raw, start + 1) >= 0:
            continue
        flat = data.ravel().copy()
        zero = flat == t.zero_point
        nonzero = flat[~zero]
        if nonzero.size == 0:
            continue
        flat[zero] = rng.choice(nonzero, size=int(zero.sum()))
        out[start : start + len(raw)] = flat.tobytes()
        refilled += int(zero.sum())
    return bytes(out), refilled


# --- what it buys, per target -------------------------------------------------------------------------

_NO_SPEEDUP = {
    "litert": "no speed-up: LiteRT's int8 CONV_2D/FULLY_CONNECTED kernels (builtin and XNNPACK) are dense and do the "
    "same work for a zero; XNNPACK's sparse inference is float-only, needs DENSIFY-encoded weights and a "
    "MobileNet-like 1x1-conv subgraph (see benchmarks/pruning_results.md). Remove channels "
    "(--prune channels:0.5) for a faster model",
    "edgetpu": "no speed-up: the Edge TPU compiler stores and multiplies dense weights",
    "tflite-micro": "no speed-up: TFLite Micro and CMSIS-NN kernels are dense",
    "tflite-micro+ethos-u": "no compute saving: the NPU still runs every MAC; any change in Vela's time estimate "
    "comes from fewer weight bytes fetched from flash",
}
_SIZE = {
    "litert": "size only after compression: the .tflite on the phone is the same size (mmap-ed, stored "
    "uncompressed in the APK); a compressed download (Play, OTA) is smaller",
    "edgetpu": "size only after compression: the compiled model and its on-chip parameter cache use dense weights",
    "tflite-micro": "size only after compression: flash holds the .tflite as is, so the zeros save flash only if "
    "your firmware stores the model compressed and inflates it",
}


def sparsity_section(
    profile: Any,
    model: bytes,
    keras_model: Any | None = None,
    layers: dict[str, str] | None = None,
    *,
    named: bytes | None = None,
) -> dict[str, Any] | None:
    """The report's ``sparsity`` section for one target, or None for a dense model (nothing to say).

    ``model`` is the file as shipped; ``named`` the same model before MCU compaction stripped its tensor
    names (needed to match int8 weights to Keras layers), when it differs.
    """
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    stats = tflite_sparsity(graph)
    if stats["sparsity"] < SPARSE_MIN:
        return None
    runtime = profile.runtime.name
    dense_twin, refilled, size = memo(content_key("sparsity-size", model), lambda: _sizes(model, graph))
    size["how"] = (
        f"measured: {HOW_GZIP9}; {HOW_BEST}; dense-equivalent: the same file with its "
        f"{refilled:,} zero weights refilled from each tensor's own non-zero values (seeded)"
    )
    section: dict[str, Any] = {"int8_weights": stats, "size": size}
    if keras_model is not None:
        reference = TFLiteGraph.from_bytes(named) if named is not None and named != model else graph
        if layers:
            reference = reference.with_keras_layers(layers)
        section["zeros_survived"] = zeros_survival(reference, keras_model)
    buys: list[str] = []
    if runtime == "tflite-micro+ethos-u" and profile.npu is not None:
        buys += _vela_comparison(section, profile, model, dense_twin)
    else:
        buys.append(_SIZE.get(runtime, _SIZE["litert"]))
    buys.append(
        f"compressed size: {size['gzip_bytes']:,} B with gzip -9 vs {size['dense_equivalent_gzip_bytes']:,} B for the "
        f"dense equivalent ({size['gzip_saving']:.0%} smaller; the weight bytes alone "
        f"{size['weights_gzip_saving']:.0%}); edgeport's .tflite.gz (--gzip) {size['best_gzip_bytes']:,} B vs "
        f"{size['dense_equivalent_best_gzip_bytes']:,} B ({size['best_gzip_saving']:.0%} smaller); "
        f"uncompressed both are {len(model):,} B"
    )
    buys.append(_NO_SPEEDUP.get(runtime, _NO_SPEEDUP["litert"]))
    section["buys"] = buys
    section["latency"] = "not faster (dense kernels on this target; see 'buys')"
    return section


def prefetch_vela(model: bytes, npu: Any) -> None:
    """Start Vela on the dense twin of a sparse ``model`` now, so the Ethos-U target's sparsity section
    (:func:`sparsity_section`, later) finds it compiled instead of compiling it on the critical path."""
    from ..devices.cortex_m import vela
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    if tflite_sparsity(graph)["sparsity"] >= SPARSE_MIN:
        dense_twin, _, _ = memo(content_key("sparsity-size", model), lambda: _sizes(model, graph))
        vela.prefetch(dense_twin, npu)


def _sizes(model: bytes, graph: Any) -> tuple[bytes, int, dict[str, Any]]:
    """The dense twin and the gzip figures of ``model`` (several gzip -9 passes: once per distinct model,
    however many targets got it)."""
    dense_twin, refilled = refill_zeros(model, graph)
    return dense_twin, refilled, _compressed_sizes(model, dense_twin, graph)


def _vela_comparison(section: dict[str, Any], profile: Any, model: bytes, dense_twin: bytes) -> list[str]:
    """Vela on the pruned model and on its dense twin (the Ethos-U device module's runner, in a child)."""
    from ..devices.cortex_m import vela
    from ..errors import EdgeportError

    if not vela.available():
        section["vela"] = {"error": "Vela (ethos-u-vela) is not installed"}
        return ["Ethos-U flash not measured: Vela (ethos-u-vela) is not installed (pip install 'edgeport[npu]')"]
    try:  # the pruned model is the one the target compiled already: shared, not compiled again
        sparse = vela.compile_bytes(model, profile.npu)
        dense = vela.compile_bytes(dense_twin, profile.npu)
    except EdgeportError as exc:
        section["vela"] = {"error": str(exc)}
        return [f"Ethos-U flash not measured: {exc}"]
    saving = 1.0 - sparse.off_chip_flash_bytes / dense.off_chip_flash_bytes if dense.off_chip_flash_bytes else 0.0
    section["vela"] = {
        "pruned": {k: v for k, v in sparse.to_dict().items() if k != "cpu_op_details"},
        "dense_equivalent": {k: v for k, v in dense.to_dict().items() if k != "cpu_op_details"},
        "flash_saving": round(saving, 4),
    }
    return [
        f"Ethos-U flash: {sparse.off_chip_flash_bytes:,} B vs {dense.off_chip_flash_bytes:,} B for the dense "
        f"equivalent ({saving:.0%} smaller: Vela's weight encoder compresses the zeros); SRAM "
        f"{sparse.sram_bytes:,} B vs {dense.sram_bytes:,} B; estimated inference {sparse.inference_ms:.3f} ms vs "
        f"{dense.inference_ms:.3f} ms ({sparse.method})"
    ]


def render_markdown(section: dict[str, Any]) -> list[str]:
    """Markdown lines for the section (for report renderers)."""
    lines = ["", "## Sparsity", ""]
    stats = section.get("int8_weights") or {}
    lines.append(
        f"- int8 weights: {stats.get('sparsity', 0):.1%} zeros ({stats.get('zeros', 0):,} of {stats.get('weights', 0):,})"
    )
    survived = section.get("zeros_survived") or {}
    if survived.get("fraction") is not None:
        lines.append(
            f"- pruned zeros surviving int8: {survived['fraction']:.2%} ({survived['survived']:,} of {survived['float_zeros']:,})"
        )
    pruning = section.get("pruning") or {}
    for step in pruning.get("steps", []):
        acc = step.get("accuracy")
        lines.append(
            f"- {step['step']}: sparsity {step.get('sparsity', 0):.1%}"
            + (f", accuracy {acc:.2%}" if acc is not None else "")
        )
    lines += [f"- {item}" for item in section.get("buys", [])]
    return lines
