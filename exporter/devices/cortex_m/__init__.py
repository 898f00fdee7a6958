"""Cortex-M microcontrollers (TFLite Micro) and Cortex-M + Ethos-U (Vela): what a firmware build needs.

Three hooks, called by the driver through :mod:`exporter.devices`:

- :func:`report_section` (analysis of every converted candidate): the exact op resolver, MACs per
  layer and the device latency estimate, and for Ethos-U the refusal of float-only models;
- :func:`prepare` (once, on the model that will be written): the TFLite Micro arena measured in a
  child process, Vela in a child process for Ethos-U, and the fit check against the board
  (flash = model + estimated kernel code, RAM = arena + I/O buffers), which can make the verdict
  "not supported" (exit 3) before anything is written;
- :func:`after_write`: ``model_data.h/.cc``, ``model_ops.h``, ``model_settings.h``, ``model.mk`` and,
  with ``--depfile``, the make dependency file; for Ethos-U also ``model_vela.tflite``.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arena import ArenaSize, with_margin
from .codesize import KernelCode, kernel_code
from .csource import ResolverOp, resolver_ops
from .latency import LatencyEstimate, estimate_latency

log = logging.getLogger(__name__)

REPORT_KEY = "cortex_m"
ETHOS_RUNTIME = "tflite-micro+ethos-u"
RUNTIMES = ("tflite-micro", ETHOS_RUNTIME)
VELA_MODEL_FILE = "model_vela.tflite"


@dataclass
class CortexMSection:
    """The report's ``cortex_m`` section; keeps the Vela-compiled model for writing (not serialized)."""

    target: str
    resolver: list[ResolverOp]
    missing_ops: list[str]
    latency: LatencyEstimate | None
    arena: ArenaSize | None = None
    arena_note: str = ""
    kernel_code: KernelCode | None = None
    io_bytes: int = 0
    vela: Any = None
    vela_note: str = ""
    npu_latency: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    #: Keras layer names of the source model, to name the layers behind the largest activations.
    layer_names: tuple[str, ...] = ()
    #: True on Ethos-U targets: the report then says whether Vela compiled the model for the NPU.
    has_npu: bool = False

    @property
    def npu_compiled(self) -> bool | None:
        """None without an NPU; False when Vela did not run, so every figure is the CPU's."""
        return (self.vela is not None) if self.has_npu else None

    def to_dict(self) -> dict[str, Any]:
        latency = self.latency.to_dict() if self.latency is not None else None
        return {
            "op_resolver": {
                "ops": [o.to_dict() for o in self.resolver],
                "count": len(self.resolver),
                "not_in_tflite_micro": self.missing_ops,
                "source": "targets/ops/tflm_ops.txt (MicroMutableOpResolver methods, tflite-micro @ 90b983c2)",
            },
            "arena": self.arena.to_dict() if self.arena is not None else None,
            "arena_note": self.arena_note or None,
            "kernel_code": self.kernel_code.to_dict() if self.kernel_code is not None else None,
            "io_bytes": self.io_bytes,
            "latency": self.npu_latency or latency,
            "cpu_latency": latency if self.npu_latency else None,
            "vela": self.vela.to_dict() if self.vela is not None else None,
            "vela_note": self.vela_note or None,
            "npu_compiled": self.npu_compiled,
            "firmware_files": list(self.files),
        }


def report_section(profile: Any, graph: Any, layers: dict[str, str] | None, options: Any = None):
    """(key, section, warnings, reasons): resolver, MACs and latency estimate; Ethos-U refuses float models."""
    ops, missing = resolver_ops(graph)
    latency = None
    if profile.latency is not None and profile.device.clock_mhz:
        latency = estimate_latency(graph, profile.latency, profile.device.clock_mhz, profile.device.cpu)
    section = CortexMSection(
        profile.name,
        ops,
        missing,
        latency,
        layer_names=tuple(layers or ()),
        has_npu=profile.runtime.name == ETHOS_RUNTIME,
    )
    reasons: list[str] = []
    if profile.runtime.name == ETHOS_RUNTIME and _float_only(graph):
        reasons.append(
            f"{profile.name} needs an int8 model: this model is float-only, so Vela would place every op on the "
            "Cortex-M55 and none on the Ethos-U NPU; export the Keras/SavedModel source with --calib DATA "
            "(edgeport converts it to int8), or pass an int8 .tflite."
        )
    return REPORT_KEY, section, [], reasons


def _float_only(graph: Any) -> bool:
    touched = [graph.tensors[i] for op in graph.ops for i in (*op.inputs, *op.outputs) if i >= 0]
    activations = [t for t in touched if not t.is_constant]
    return bool(activations) and all(t.is_float for t in activations)


def prepare(profile: Any, model: bytes, report: Any, options: Any) -> None:
    """Measure the arena, run Vela (Ethos-U), and check the board's flash and RAM: before any write."""
    from ...verify.graph import TFLiteGraph

    section = report.extra.get(REPORT_KEY)
    if not isinstance(section, CortexMSection):
        return
    graph = TFLiteGraph.from_bytes(model)
    section.resolver, section.missing_ops = resolver_ops(graph)
    section.io_bytes = sum(t.nbytes for t in (*graph.input_tensors, *graph.output_tensors))
    if any(not _is_fit_reason(r) for r in report.reasons):  # it does not run here (op, dtype): measure nothing
        return
    margin = getattr(options, "arena_margin", None)
    margin = 0.10 if margin is None else margin
    measured, method = _measure_arena(model, section, report)
    flash_model = len(model)
    if profile.runtime.name == ETHOS_RUNTIME:
        vela_sram = _run_vela(profile, model, section, report)
        if section.vela is not None:
            flash_model = section.vela.model_bytes
            vela_graph = TFLiteGraph.from_bytes(section.vela.model)
            section.resolver, section.missing_ops = resolver_ops(vela_graph)
            section.npu_latency = _npu_latency(profile, section, vela_graph)
            if vela_sram is not None and (measured is None or vela_sram > measured):
                measured, method = (
                    vela_sram,
                    f"the SRAM figure of Vela ({section.vela.method}), larger than the TFLite Micro arena",
                )
    if measured is not None:
        section.arena = with_margin(measured, method, margin)
    section.kernel_code = kernel_code([o.op for o in section.resolver])
    _fit(profile, report, section, flash_model, options)


def _measure_arena(model: bytes, section: CortexMSection, report: Any) -> tuple[int | None, str]:
    from ...benchmark import measure_arena
    from ...errors import EdgeportError

    try:
        arena = measure_arena(model)
    except EdgeportError as exc:
        section.arena_note = f"TFLite Micro arena not measured: {exc}"
        report.reasons.append(f"TFLite Micro could not run the model on the host, so its arena is unknown: {exc}")
        return None, ""
    return arena.bytes, arena.method


def _run_vela(profile: Any, model: bytes, section: CortexMSection, report: Any) -> int | None:
    from ...errors import EdgeportError
    from . import vela

    if not vela.available():
        npu = profile.npu.accelerator if profile.npu is not None else "Ethos-U"
        section.vela_note = (
            f"Vela (ethos-u-vela) is not installed, so nothing was compiled for the {npu} NPU: "
            f"{VELA_MODEL_FILE} was not written, the model runs on the CPU alone and the RAM, flash and latency "
            "figures are the CPU's; pip install 'edgeport[npu]' and export again"
        )
        report.warnings.append(section.vela_note + ".")
        return None
    try:
        section.vela = vela.compile_bytes(model, profile.npu)
    except EdgeportError as exc:
        report.reasons.append(f"Vela: {exc}")
        return None
    result = section.vela
    if result.cpu_ops:
        listed = "; ".join(f"{c.op} ({c.reason})" for c in result.cpu_op_details[:5])
        report.warnings.append(
            f"Vela left {result.cpu_ops} op(s) on the Cortex-M CPU (NPU: {result.npu_ops})"
            + (f": {listed}" if listed else ".")
        )
    return result.sram_bytes


def _npu_latency(profile: Any, section: CortexMSection, vela_graph: Any) -> dict[str, Any]:
    """Vela's NPU estimate plus the table estimate for the ops left on the CPU."""
    result = section.vela
    cpu_ops = [op for op in vela_graph.ops if op.custom_code != "ethos-u"]
    cpu = None
    if profile.latency is not None and profile.device.clock_mhz and cpu_ops:
        cpu = estimate_latency(vela_graph, profile.latency, profile.device.clock_mhz, profile.device.cpu, cpu_ops)
    cpu_ms = cpu.milliseconds if cpu is not None else 0.0
    return {
        "estimated_ms": round(result.inference_ms + cpu_ms, 4),
        "npu_ms": round(result.inference_ms, 4),
        "cpu_ms": round(cpu_ms, 4),
        "macs": result.macs,
        "method": (
            f"estimate: NPU part {result.method}"
            + (f"; CPU part {cpu.method}" if cpu is not None else "; no op left on the CPU")
        ),
        "cpu_layers": [r.to_dict() for r in cpu.rows] if cpu is not None else [],
    }


def _fit(profile: Any, report: Any, section: CortexMSection, flash_model: int, options: Any) -> None:
    """Replace the generic flash/RAM checks by the firmware's: model + kernel code, arena + I/O."""
    from ...analyze.memory import budget_remedy
    from ...report.report import VERDICT_FORCED, VERDICT_NOT_SUPPORTED, VERDICT_OK, FitCheck

    code = section.kernel_code
    what = "Vela-compiled model" if section.vela is not None else "model file"
    checks = {
        "flash": FitCheck(
            "flash",
            flash_model + code.total_bytes,
            profile.memory.flash_budget_bytes,
            f"estimate: {what} {flash_model:,} B (measured) + kernel code {code.total_bytes:,} B for "
            f"{len(code.per_op)} op type(s) ({code.to_dict()['method']})",
        )
    }
    if section.arena is not None:
        checks["ram"] = FitCheck(
            "ram",
            section.arena.bytes + section.io_bytes,
            profile.memory.ram_budget_bytes,
            f"tensor arena {section.arena.bytes:,} B ({section.arena.derivation}) + application input/output "
            f"buffers {section.io_bytes:,} B (copies held by the application; TFLite Micro keeps its I/O tensors in the arena)",
        )
    for index, old in enumerate(report.fit):
        new = checks.get(old.resource)
        if new is None:
            continue
        report.reasons[:] = [r for r in report.reasons if not _is_fit_reason(r, old.resource)]
        report.fit[index] = new
        if not new.fits:
            report.reasons.append(
                _over_budget(new)
                + " Biggest consumers: "
                + _consumers(new.resource, report, section, flash_model)
                + " "
                + budget_remedy(new.resource, new.needed_bytes, new.budget_bytes)
            )
    force = bool(getattr(options, "force", False))
    report.verdict = VERDICT_OK if not report.reasons else (VERDICT_FORCED if force else VERDICT_NOT_SUPPORTED)


def _is_fit_reason(reason: str, resource: str | None = None) -> bool:
    """A reason the driver added for a generic flash/RAM estimate over budget (replaced by the firmware's)."""
    names = (resource,) if resource else ("flash", "ram")
    return any(reason.startswith(f"{name} needs ") for name in names) and "over the budget of" in reason


def _over_budget(check: Any) -> str:
    """The driver's wording for a check over budget."""
    return f"{check.resource} needs {check.needed_bytes:,} B ({check.method}), over the budget of {check.budget_bytes:,} B."


def _consumers(resource: str, report: Any, section: CortexMSection, flash_model: int) -> str:
    if resource == "flash":
        rows = sorted(
            (r for r in report.extra.get("size_by_layer") or [] if r.get("bytes")), key=lambda r: -r["bytes"]
        )[:3]
        parts = [f"layer {r['layer']} {r['bytes']:,} B" for r in rows]
        parts.append(f"kernel code {section.kernel_code.total_bytes:,} B")
        return "; ".join(parts) + f" (model total {flash_model:,} B)."
    from ...verify.layers import keras3_scoped, layer_for_tensor

    tensors = (report.memory.get("largest_tensors") or [])[:3]
    scoped = keras3_scoped((t["name"] for t in tensors), section.layer_names)
    parts = []
    for t in tensors:
        layer = layer_for_tensor(t["name"], section.layer_names, keras3_scopes=scoped)
        what = f"output of layer '{layer}'" if layer else f"tensor {t['name']}"
        parts.append(f"{what} {t['nbytes']:,} B {t['shape']}")
    return (
        f"arena {section.arena.bytes:,} B, I/O buffers {section.io_bytes:,} B; largest activations: "
        + "; ".join(parts)
        + "."
    )


def after_write(
    profile: Any,
    model_path: Path,
    layers: dict[str, str] | None,
    report: Any,
    options: Any = None,
    source_path: Path | None = None,
) -> None:
    """Write the firmware files next to ``model_int8.tflite``; unchanged files keep their mtime."""
    from .firmware import write_firmware

    section = report.extra.get(REPORT_KEY)
    if not isinstance(section, CortexMSection):
        return
    write_firmware(profile, model_path, section, report, options, source_path)
