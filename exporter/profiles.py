"""Target profiles: the device classes edgeport exports for, as validated data.

A profile is a TOML file (``targets/*.toml``, shipped inside the package as ``exporter.profiles_data``).
It describes the *device* — what it runs, which ops and dtypes it accepts, how much memory it has,
how to benchmark it — never how the tool runs (that is :class:`exporter.options.ExportOptions`).
``inherit = "base"`` pulls in another profile (files starting with ``_`` are bases, not targets), so
sibling devices stay short. Every resolved value remembers the file it came from, which
``edgeport targets show`` prints. Unknown keys and wrong types are errors that name the key (the schema and
the file reading: :mod:`exporter.profile_files`).

Only the standard library is imported here: ``edgeport targets`` must answer at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProfileError
from .profile_files import (
    ALL_BUILTINS,
    DEVICE_KINDS,
    FORMATS,
    INTERPRETERS,
    IO_DTYPES,
    ONNX_OPS,
    RUNTIMES,
    available_targets,
    load_raw,
    op_list_path,
    read_op_list,
    resolve_path,
    validate,
)

__all__ = [
    "ALL_BUILTINS",
    "DEVICE_KINDS",
    "FORMATS",
    "INTERPRETERS",
    "IO_DTYPES",
    "ONNX_OPS",
    "RUNTIMES",
    "Benchmark",
    "Device",
    "Latency",
    "Memory",
    "Npu",
    "OpSupport",
    "Quantization",
    "Runtime",
    "TargetProfile",
    "available_targets",
    "describe",
    "load_profile",
    "load_profiles",
    "op_list_path",
    "read_op_list",
]


@dataclass(frozen=True)
class Device:
    """The physical device class, with a named reference board or SoC to make numbers concrete."""

    kind: str
    reference: str
    cpu: str
    clock_mhz: float | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    notes: str = ""


@dataclass(frozen=True)
class Runtime:
    """What executes the model on the device."""

    name: str
    kernels: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Quantization:
    """How the model must be quantized for this device."""

    scheme: str
    io_dtype: str
    io_dtypes_allowed: tuple[str, ...]
    per_channel: bool
    float_ops_allowed: bool
    #: The runtime has int16-activation / int8-weight (16x8) kernels, a fallback when int8 loses accuracy.
    int16_activations: bool = False


@dataclass(frozen=True)
class OpSupport:
    """Which TFLite ops the runtime has, and the numeric limits its kernels impose."""

    op_list: str
    names: frozenset[str]
    limits: Mapping[str, int]

    def supports(self, op_name: str) -> bool:
        if self.op_list == ALL_BUILTINS:
            return not op_name.startswith(("CUSTOM", "Flex", "FLEX", "DELEGATE"))
        if self.op_list == ONNX_OPS:  # ONNX op types (Conv, QuantizeLinear); onnx is imported only here
            import onnx.defs

            return onnx.defs.has(op_name)
        return op_name in self.names


@dataclass(frozen=True)
class Memory:
    """Budgets the exported model must fit in (None: no budget)."""

    flash_budget_bytes: int | None = None
    ram_budget_bytes: int | None = None
    param_cache_bytes: int | None = None


@dataclass(frozen=True)
class Benchmark:
    """How the on-host benchmark runs the model through the target's own interpreter."""

    interpreter: str
    threads: int = 1
    xnnpack: bool = True
    runs: int = 50
    warmup: int = 5


@dataclass(frozen=True)
class Npu:
    """Vela settings for an Ethos-U NPU (absent for targets without one)."""

    accelerator: str
    system_config: str
    memory_mode: str


@dataclass(frozen=True)
class Latency:
    """A device latency *estimate*: cycles per MAC for each op type, at the device's clock.

    ``cycles_per_mac`` maps a TFLite op name (or ``default``) to the cycles one unit of the op's work
    costs (a multiply-accumulate for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, an input element
    read for pooling, an output element for the rest); ``basis`` says where the numbers come from.
    """

    cycles_per_mac: Mapping[str, float]
    overhead_cycles_per_op: float = 0.0
    basis: str = ""


@dataclass(frozen=True)
class TargetProfile:
    """A resolved, validated device profile."""

    name: str
    title: str
    description: str
    device: Device
    runtime: Runtime
    quantization: Quantization
    batch: int
    ops: OpSupport
    memory: Memory
    benchmark: Benchmark
    npu: Npu | None
    path: str
    #: What an export writes for this target: "tflite" (model_int8.tflite) and/or "onnx" (float + int8 QDQ).
    formats: tuple[str, ...] = ("tflite",)
    #: Cycles-per-MAC table for the device latency estimate (None: the profile gives no estimate).
    latency: Latency | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_mcu(self) -> bool:
        return self.device.kind in ("mcu", "mcu+npu")

    @property
    def requires_integer_only(self) -> bool:
        return not self.quantization.float_ops_allowed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (op names listed, provenance omitted) for report.json."""
        data = dataclasses.asdict(self)
        data.pop("sources", None)
        data["ops"]["names"] = sorted(self.ops.names)
        data["ops"]["limits"] = dict(self.ops.limits)
        if self.latency is not None:
            data["latency"]["cycles_per_mac"] = dict(self.latency.cycles_per_mac)
        return data


def load_profile(spec: str | Path) -> TargetProfile:
    """Load a shipped profile by name, or a user's profile by path, validated."""
    path = resolve_path(str(spec))
    sources: dict[str, str] = {}
    raw = load_raw(path, sources)
    validate(raw, path)
    dev, rt, q, ops = raw["device"], raw["runtime"], raw["quantization"], raw["ops"]
    mem, bench = raw.get("memory", {}), raw["benchmark"]
    profile = TargetProfile(
        name=raw["name"],
        title=raw["title"],
        description=raw["description"],
        device=Device(**dev),
        runtime=Runtime(**rt),
        quantization=Quantization(
            scheme=q["scheme"],
            io_dtype=q["io_dtype"],
            io_dtypes_allowed=tuple(q["io_dtypes_allowed"]),
            per_channel=q["per_channel"],
            float_ops_allowed=q["float_ops_allowed"],
            int16_activations=q.get("int16_activations", False),
        ),
        batch=raw.get("batch", 1),
        ops=OpSupport(op_list=ops["list"], names=read_op_list(ops["list"], path), limits=dict(ops.get("limits", {}))),
        memory=Memory(**mem),
        benchmark=Benchmark(**bench),
        npu=Npu(**raw["npu"]) if "npu" in raw else None,
        path=str(path),
        formats=tuple(raw.get("formats", ["tflite"])),
        latency=_latency(raw.get("latency")),
        sources=sources,
    )
    return profile


def _latency(table: dict[str, Any] | None) -> Latency | None:
    if table is None:
        return None
    return Latency(
        cycles_per_mac={str(k): float(v) for k, v in table["cycles_per_mac"].items()},
        overhead_cycles_per_op=float(table.get("overhead_cycles_per_op", 0)),
        basis=table["basis"],
    )


def load_profiles(spec: str) -> list[TargetProfile]:
    """Targets from a CLI value: one name or path, a comma list, or ``all``."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ProfileError(f"No target given; valid targets: {', '.join(available_targets())}.")
    profiles = []
    for name in names:
        if name == "all":
            # every device that runs a TFLite model; the generic ONNX profile is asked for by name
            profiles += [p for p in (load_profile(n) for n in available_targets()) if "tflite" in p.formats]
        else:
            profiles.append(load_profile(name))
    seen: set[str] = set()
    unique = []
    for p in profiles:
        if p.name not in seen:
            seen.add(p.name)
            unique.append(p)
    return unique


def describe(profile: TargetProfile) -> str:
    """The resolved profile as TOML-like text, each value followed by the file it came from."""
    lines = [f"# {profile.name}: {profile.title}", f"# {profile.description}", f"# resolved from {profile.path}", ""]
    flat = profile.to_dict()

    def origin(key: str) -> str:
        return f"  # {profile.sources.get(key, 'default')}"

    for key in ("name", "title", "batch", "formats"):
        lines.append(f"{key} = {flat[key]!r}{origin(key)}")
    for section in ("device", "runtime", "quantization", "ops", "memory", "benchmark", "npu", "latency"):
        values = flat.get(section)
        if values is None:
            continue
        lines.append("")
        lines.append(f"[{section}]")
        for key, value in values.items():
            if section == "ops" and key == "names":
                every = "all standard ONNX operators" if profile.ops.op_list == ONNX_OPS else "all TFLite builtin ops"
                shown = f"{len(value)} ops" if value else every
                lines.append(f"# supported ops ({shown}): {', '.join(value)}" if value else f"# supported: {shown}")
                continue
            if section == "ops" and key == "op_list":
                lines.append(f"list = {value!r}{origin('ops.list')}")
                continue
            lines.append(f"{key} = {value!r}{origin(f'{section}.{key}')}")
    return "\n".join(lines) + "\n"
