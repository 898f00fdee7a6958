"""What a TFLite Micro target's flash holds: the model compacted, and clustered weights LUT-compressed.

Both steps run after analysis (which reads the full tensor names and plain int8 weights) and before
:func:`exporter.devices.prepare`, so the arena, the resolver, the C array, ``MODEL_ARENA_SIZE`` and the
fit check all see the bytes that ship. Only TFLite Micro targets get the LUT form: LiteRT, the Edge TPU
compiler and Vela read plain int8 tensors, so they keep the clustered but uncompressed file.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..calibrate.dataset import CalibrationSet
from ..errors import EdgeportError
from ..profiles import TargetProfile
from ..report.report import TargetReport

log = logging.getLogger(__name__)

#: TFLite Micro runtimes whose interpreter decodes LUT-compressed tensors (DECODE operators).
LUT_RUNTIMES = ("tflite-micro",)
#: Samples the bit-exactness check invokes both models on (the calibration set's first ones).
CHECK_SAMPLES = 16


def compact_for_flash(report: TargetReport, model: bytes) -> bytes:
    """MCU flash: drop what TFLite Micro never reads (after analysis, which uses the full names)."""
    from ..convert.compact import compact

    model, compaction = compact(model)
    if compaction.saved:
        report.conversion["compaction"] = compaction.describe()
        _set_flash_bytes(report, len(model))
    return model


def pack_for_tflm(
    report: TargetReport,
    profile: TargetProfile,
    model: bytes,
    samples: CalibrationSet | None,
    opts: Any,
    clustered_source: bool = False,
    converted: bool = True,
) -> bytes:
    """A TFLite Micro target's flash file: zero points shared, clustered weights LUT-compressed, and
    TFLite Micro's outputs checked bit-identical to ``model`` (the analysed int8 model) on the samples.

    Other MCU runtimes (Vela reads the file for the Ethos-U) get ``model`` unchanged. One check covers
    both rewrites when LUT ships; a model LUT does not touch is checked for the zero points alone. A given
    .tflite (``converted`` False) keeps its zero points: edgeport ships the user's file as it is."""
    if profile.runtime.name not in LUT_RUNTIMES:
        return model
    from ..convert.compact import share_zero_points

    keep = opts.keep_zero_points or not converted
    shared, sharing = (model, None) if keep else share_zero_points(model)
    if sharing is not None and not sharing.tensors:
        sharing = None
    packed = lut_for_flash(
        report,
        profile,
        shared,
        samples,
        opts.arena_margin,
        opts.lut,
        clustered_source,
        opts.lut_max_decoded,
        reference=model,
    )
    if sharing is not None and packed is shared and not _zero_points_exact(report, model, shared, samples):
        packed = model
    elif sharing is not None:
        report.conversion["zero_points"] = sharing.describe()
        if packed is shared:
            _set_flash_bytes(report, len(shared))
    if packed is not model:
        from ..convert.compact import tflm_only

        report.extra["flash_packing"] = {
            "analysed_bytes": len(model),
            "zero_points": {"tensors": sharing.tensors, "saved": sharing.saved} if sharing is not None else None,
            "shipped_bytes": len(packed),
            "layout": f"model_int8.tflite loads in TFLite Micro only: {tflm_only(packed)}; "
            "--keep-zero-points --lut off writes one LiteRT also loads",
        }
    return packed


def _zero_points_exact(report: TargetReport, model: bytes, shared: bytes, samples: CalibrationSet | None) -> bool:
    """TFLite Micro's outputs of the shared-zero-point file equal the analysed model's (a child each)."""

    inputs, inputs_from = check_inputs(model, samples)
    try:
        check = _checked(model, shared, inputs, arena=False)
    except EdgeportError as exc:
        report.warnings.append(f"Zero points not shared: the TFLite Micro check could not run ({exc}).")
        return False
    report.extra["zero_points_check"] = {**check.to_dict(), "inputs": inputs_from, "summary": check.summary()}
    if not check.bit_exact:
        report.warnings.append(f"Zero points not shared: {check.summary()}. Please report this model.")
        return False
    return True


def lut_for_flash(
    report: TargetReport,
    profile: TargetProfile,
    model: bytes,
    samples: CalibrationSet | None,
    margin: float = 0.10,
    mode: str = "auto",
    clustered_source: bool = False,
    max_decoded: int | None = None,
    reference: bytes | None = None,
) -> bytes:
    """The LUT-compressed model when it is smaller, fits where the plain one fits, and TFLite Micro's
    outputs stay bit-identical; else ``model``. A model with nothing clustered comes back unchanged, silently.

    LUT trades RAM for flash: DECODE writes each decoded tensor into the arena just before its consumer
    runs, so the arena grows by the largest decoded tensor alive at once (AD: 4,632 B -> 87,976 B). The
    compressed model ships unless that growth breaks a RAM budget the plain model meets; ``max_decoded``
    (--lut-max-decoded) keeps larger tensors plain, to cap that growth. ``reference`` (default ``model``)
    is what the compressed file's outputs must equal: the analysed model, before zero-point sharing."""
    if profile.runtime.name not in LUT_RUNTIMES or mode == "off":
        return model
    if mode == "auto" and report.conversion.get("int8_clustering") is None and not clustered_source:
        return model
    from ..compress.lut_child import lut_compress_in_child

    try:
        compressed, lut = lut_compress_in_child(model, max_decoded_bytes=max_decoded)
    except EdgeportError as exc:
        report.warnings.append(f"Weights not LUT-compressed: {exc}; the plain int8 model ships.")
        return model
    if not lut.changed:
        if report.conversion.get("int8_clustering") is not None:  # clustered, yet nothing paid: say why
            report.extra["lut_compression"] = {**lut.to_dict(), "shipped": False}
            report.warnings.append(f"Clustered weights not LUT-compressed: {lut.note}.")
        return model
    inputs, inputs_from = check_inputs(model, samples)
    try:
        check = _checked(reference if reference is not None else model, compressed, inputs, arena=True)
    except EdgeportError as exc:
        report.warnings.append(f"Weights not LUT-compressed: the TFLite Micro check could not run ({exc}).")
        return model
    section = {**lut.to_dict(), "check": {**check.to_dict(), "inputs": inputs_from, "summary": check.summary()}}
    report.extra["lut_compression"] = section
    if not check.bit_exact:
        section["shipped"] = False
        report.warnings.append(
            f"Weights not LUT-compressed: {check.summary()}; the plain int8 model ships. Please report this model."
        )
        return model
    blocked = _ram_blocks(profile, check.arena, margin)
    section["shipped"] = blocked is None
    if blocked is not None:
        report.warnings.append(f"Weights not LUT-compressed: {blocked}; the plain int8 model ships.")
        return model
    arena = check.arena
    ram = (
        f"; RAM: the arena grows {arena.reference:,} -> {arena.compressed:,} B (decoded weights live in it while "
        f"their op runs), or {arena.compressed_with_alt:,} B plus {arena.alt_decompression:,} B of "
        "decompression memory (MicroInterpreter::SetDecompressionMemory)"
        if arena is not None
        else ""
    )
    report.conversion["lut"] = (
        f"LUT-compressed for TFLite Micro: {len(lut.compressed)} tensors at "
        f"{'/'.join(str(b) for b in sorted({t.bits for t in lut.compressed}))}-bit indices, flash "
        f"{lut.size_before:,} -> {lut.size_after:,} B ({lut.saved:,} B saved){ram}; TFLite Micro's outputs "
        f"bit-identical to the uncompressed model on {inputs_from} (host, in a child process)"
    )
    _set_flash_bytes(report, len(compressed))
    if isinstance(report.memory.get("weights_bytes"), int):
        report.memory["weights_bytes"] -= lut.saved  # the constants' bytes in the shipped file
    return compressed


def _checked(reference: bytes, shipped: bytes, inputs: list, *, arena: bool) -> Any:
    """:func:`exporter.compress.lut_check.check_bit_exact`, once per content: cortex-m4 and cortex-m7 of one
    export ship the same bytes, checked on the same inputs."""
    from ..analyze.memo import content_key, memo
    from ..compress.lut_check import check_bit_exact

    key = content_key("tflm-check", reference, shipped, *(a for sample in inputs for a in sample), arena)
    return memo(key, lambda: check_bit_exact(reference, shipped, inputs, arena=arena))


def _ram_blocks(profile: TargetProfile, arena: Any, margin: float) -> str | None:
    """Why the compressed model must not ship: its arena (with the export's margin) breaks the RAM budget
    the plain model's meets; None when it fits, or when the plain model does not fit either."""
    budget = profile.memory.ram_budget_bytes
    if arena is None or not budget:
        return None
    plain, compressed = (round(b * (1 + margin)) for b in (arena.reference, arena.compressed))
    if plain <= budget < compressed:
        return (
            f"decoding the weights needs a {compressed:,} B arena (with margin), over the {budget:,} B RAM budget "
            f"the plain model's {plain:,} B meets"
        )
    return None


def check_inputs(model: bytes, samples: CalibrationSet | None) -> tuple[list[list[np.ndarray]], str]:
    """Per sample, one float array per model input: the calibration samples, else seeded random ones."""
    if samples is not None and samples.arrays:
        count = min(CHECK_SAMPLES, samples.count)
        per_sample = [[np.asarray(a[i : i + 1], dtype=np.float32) for a in samples.arrays] for i in range(count)]
        # a 2-image calibration is a thin check: add seeded inputs spread over the same value range
        rng = np.random.default_rng(0)
        spread = [
            [
                rng.uniform(float(a.min()), float(a.max()), size=(1, *a.shape[1:])).astype(np.float32)
                for a in samples.arrays
            ]
            for _ in range(CHECK_SAMPLES - count)
        ]
        return per_sample + spread, (
            f"{count} calibration samples ({samples.source})"
            + (f" and {len(spread)} seeded random inputs over their value range" if spread else "")
        )
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    rng = np.random.default_rng(0)
    per_sample = [
        [rng.uniform(-1.0, 1.0, size=t.shape).astype(np.float32) for t in graph.input_tensors]
        for _ in range(CHECK_SAMPLES)
    ]
    return per_sample, f"{CHECK_SAMPLES} seeded random inputs (no calibration data)"


def _set_flash_bytes(report: TargetReport, size: int) -> None:
    report.memory["model_bytes"] = size
    for check in report.fit:
        if check.resource == "flash":
            check.needed_bytes = size


def vela_clustering(report: TargetReport, profile: TargetProfile, session: Any, config: Any, model: bytes) -> None:
    """Ethos-U with --cluster: Vela's flash for the clustered model against the same model unclustered.

    Vela's weight encoder compresses runs of repeated values, so few distinct values per channel can
    shrink its flash without any LUT; measured here, not assumed (one more conversion and Vela run)."""
    from dataclasses import replace

    from ..convert.compact import compact
    from ..devices.cortex_m import ETHOS_RUNTIME, vela

    if profile.runtime.name != ETHOS_RUNTIME or profile.npu is None or session is None:
        return
    if not getattr(config, "int8_clusters", None) or not vela.available():
        return
    try:
        plain = compact(session.convert(replace(config, int8_clusters=None)).model)[0]
        clustered_vela = vela.compile_bytes(model, profile.npu)
        plain_vela = vela.compile_bytes(plain, profile.npu)
    except EdgeportError as exc:
        report.warnings.append(f"Vela flash of the unclustered model not measured: {exc}")
        return
    ours, theirs = clustered_vela.off_chip_flash_bytes, plain_vela.off_chip_flash_bytes
    saving = 1.0 - ours / theirs if theirs else 0.0
    report.extra["vela_clustering"] = {
        "clustered_flash_bytes": ours,
        "unclustered_flash_bytes": theirs,
        "flash_saving": round(saving, 4),
        "clustered_sram_bytes": clustered_vela.sram_bytes,
        "unclustered_sram_bytes": plain_vela.sram_bytes,
        "method": f"measured: Vela {clustered_vela.version} off-chip flash of both models ({profile.npu.accelerator})",
    }
    effect = (
        f"{saving:.1%} smaller: Vela's weight encoder compresses repeated values"
        if saving > 0
        else f"{-saving:.1%} larger: Vela's weight encoder gains nothing from these values"
    )
    report.conversion["vela_clustering"] = (
        f"Vela flash {ours:,} B clustered vs {theirs:,} B for the same model unclustered ({effect}; the "
        "Ethos-U reads Vela's own format, not TFLite Micro's lookup tables)"
    )


def clustering_buys(report: TargetReport, profile: TargetProfile, model: bytes) -> None:
    """A clustered model on a target that reads plain int8 (LiteRT, the Edge TPU): what clustering buys it.

    The file keeps one int8 byte per weight there; only a compressed download shrinks (measured, gzip -9)."""
    import gzip

    from ..devices.cortex_m import ETHOS_RUNTIME

    if report.conversion.get("int8_clustering") is None or "lut" in report.conversion:
        return
    if profile.runtime.name in LUT_RUNTIMES or profile.runtime.name == ETHOS_RUNTIME:
        return  # said by lut_for_flash's warning / vela_clustering
    packed = len(gzip.compress(model, compresslevel=9, mtime=0))
    report.conversion["clustering_buys"] = (
        f"{profile.runtime.name} reads plain int8 tensors: the file stays {len(model):,} B (one byte per weight); "
        f"clustering buys a smaller download, gzip -9 {packed:,} B ({packed / len(model):.0%} of the file; "
        "measured), not less flash or RAM"
    )
