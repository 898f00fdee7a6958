"""Target profiles: the device classes edgeport exports for, as validated data.

A profile is a TOML file (``targets/*.toml``, shipped inside the package as ``exporter.profiles_data``).
It describes the *device* — what it runs, which ops and dtypes it accepts, how much memory it has,
how to benchmark it — never how the tool runs (that is :class:`exporter.options.ExportOptions`).
``inherit = "base"`` pulls in another profile (files starting with ``_`` are bases, not targets), so
sibling devices stay short. Every resolved value remembers the file it came from, which
``edgeport targets show`` prints. Unknown keys and wrong types are errors that name the key.

Only the standard library is imported here: ``edgeport targets`` must answer at once.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProfileError

IO_DTYPES = ("int8", "uint8", "float32")
FORMATS = ("tflite", "onnx")
RUNTIMES = ("litert", "tflite-micro", "edgetpu", "tflite-micro+ethos-u", "onnxruntime")
INTERPRETERS = ("litert", "tflite-micro", "onnxruntime")
DEVICE_KINDS = ("phone", "accelerator", "mcu", "mcu+npu")
#: Special op-list name: any TFLite builtin op (LiteRT ships them all); custom and Flex ops are not.
ALL_BUILTINS = "litert-builtins"
#: Special op-list name: any standard ONNX operator (onnxruntime's CPU provider implements the default domain).
ONNX_OPS = "onnxruntime"


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


# --- schema -------------------------------------------------------------------------------------

_Spec = tuple[type | tuple[type, ...], bool, tuple[Any, ...] | None]  # (types, required, choices)
_SCHEMA: dict[str, dict[str, _Spec]] = {
    "": {
        "name": (str, True, None),
        "title": (str, True, None),
        "description": (str, True, None),
        "inherit": (str, False, None),
        "batch": (int, False, (1,)),
        "formats": (list, False, None),
    },
    "device": {
        "kind": (str, True, DEVICE_KINDS),
        "reference": (str, True, None),
        "cpu": (str, True, None),
        "clock_mhz": ((int, float), False, None),
        "flash_bytes": (int, False, None),
        "ram_bytes": (int, False, None),
        "notes": (str, False, None),
    },
    "runtime": {
        "name": (str, True, RUNTIMES),
        "kernels": (str, False, None),
        "notes": (str, False, None),
    },
    "quantization": {
        "scheme": (str, True, ("int8",)),
        "io_dtype": (str, True, IO_DTYPES),
        "io_dtypes_allowed": (list, True, None),
        "per_channel": (bool, True, None),
        "float_ops_allowed": (bool, True, None),
        "int16_activations": (bool, False, None),
    },
    "ops": {
        "list": (str, True, None),
        "limits": (dict, False, None),
    },
    "memory": {
        "flash_budget_bytes": (int, False, None),
        "ram_budget_bytes": (int, False, None),
        "param_cache_bytes": (int, False, None),
    },
    "benchmark": {
        "interpreter": (str, True, INTERPRETERS),
        "threads": (int, False, None),
        "xnnpack": (bool, False, None),
        "runs": (int, False, None),
        "warmup": (int, False, None),
    },
    "npu": {
        "accelerator": (str, True, None),
        "system_config": (str, True, None),
        "memory_mode": (str, True, None),
    },
    "latency": {
        "cycles_per_mac": (dict, True, None),
        "overhead_cycles_per_op": ((int, float), False, None),
        "basis": (str, True, None),
    },
}
_OPTIONAL_SECTIONS = {"npu", "memory", "latency"}
_KNOWN_LIMITS = {
    "softmax_max_classes": "largest softmax (classes) the runtime's int8 kernel survives",
    "softmax_max_elements": "largest 1-D softmax the runtime maps",
    "max_non1_dims": "most non-1 tensor dimensions the runtime handles",
}


# --- locating and reading files -----------------------------------------------------------------


def _shipped_dir() -> Path:
    """The folder of profiles shipped with the package (``targets/`` in the source tree)."""
    return Path(str(importlib.resources.files("exporter.profiles_data")))


def op_list_path(name: str) -> Path:
    """Path of a shipped op list (``targets/ops/<name>_ops.txt``)."""
    return _shipped_dir() / "ops" / f"{name}_ops.txt"


def available_targets() -> list[str]:
    """Names of the shipped target profiles, sorted."""
    return sorted(p.stem for p in _shipped_dir().glob("*.toml") if not p.stem.startswith("_"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ProfileError(
            f"Target profile {path} does not exist.",
            hint=f"Check the path, or name a shipped target: {', '.join(available_targets())}.",
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"Target profile {path} is not valid TOML: {exc}.",
            hint="Fix the syntax at the line and column shown ('edgeport targets show cortex-m4' prints a valid profile).",
        ) from exc
    except OSError as exc:
        raise ProfileError(
            f"Cannot read target profile {path}: {exc.strerror or exc}.", hint="Check the file's permissions."
        ) from exc


def _resolve_path(spec: str, relative_to: Path | None = None) -> Path:
    """A profile name (``cortex-m4``) or a path to a user's TOML file."""
    if spec.endswith(".toml") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        return path
    path = _shipped_dir() / f"{spec}.toml"
    if not path.is_file():
        raise ProfileError(
            f"Unknown target '{spec}'. Valid targets: {', '.join(available_targets())}, "
            "or a path to your own profile (.toml)."
        )
    return path


def _merge(base: dict[str, Any], child: dict[str, Any], sources: dict[str, str], origin: str) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in child.items():
        if isinstance(value, dict) and key in _SCHEMA and key != "":
            section = dict(merged.get(key, {}))
            for sub, subval in value.items():
                section[sub] = subval
                sources[f"{key}.{sub}"] = origin
            merged[key] = section
        else:
            merged[key] = value
            sources[key] = origin
    return merged


def _load_raw(path: Path, sources: dict[str, str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise ProfileError(f"Target profile {path}: 'inherit' forms a cycle ({chain}).")
    raw = _read_toml(path)
    parent = raw.get("inherit")
    base: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"Target profile {path}: key 'inherit' must be a profile name; received {parent!r}.")
        base = _load_raw(_parent_path(parent, path), sources, (*seen, path.resolve()))
    return _merge(base, raw, sources, path.name)


def _parent_path(parent: str, path: Path) -> Path:
    """The file ``inherit = parent`` in ``path`` names; a wrong name is reported against that file and key."""
    if parent.endswith(".toml") or "/" in parent or "\\" in parent:
        parent_path = _resolve_path(parent, path.parent)
        if not parent_path.is_file():
            raise ProfileError(
                f"Target profile {path}: key 'inherit' names {parent!r}, but {parent_path} does not exist.",
                hint="Point 'inherit' at an existing .toml file (a relative path is taken from this profile's folder) "
                "or at a shipped profile by name.",
            )
        return parent_path
    parent_path = _shipped_dir() / f"{parent}.toml"
    if not parent_path.is_file():
        names = sorted(p.stem for p in _shipped_dir().glob("*.toml"))
        raise ProfileError(
            f"Target profile {path}: key 'inherit' names an unknown profile {parent!r}.",
            hint=f"Inherit one of {', '.join(names)}, or give a path to a .toml file.",
        )
    return parent_path


# --- validation ---------------------------------------------------------------------------------


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(types, tuple):
        return " or ".join(names.get(t, t.__name__) for t in types)
    return names.get(types, types.__name__)


def _validate(raw: dict[str, Any], path: Path) -> None:
    for key, value in raw.items():
        if key in _SCHEMA and key != "":
            if not isinstance(value, dict):
                raise ProfileError(f"Target profile {path}: key '{key}' must be a table ([{key}]); received {value!r}.")
            continue
        if key not in _SCHEMA[""]:
            valid = sorted([*_SCHEMA[""], *(s for s in _SCHEMA if s)])
            raise ProfileError(f"Target profile {path}: unknown key '{key}'. Valid top-level keys: {', '.join(valid)}.")
    for section, spec in _SCHEMA.items():
        table = raw if section == "" else raw.get(section)
        if table is None:
            if section in _OPTIONAL_SECTIONS:
                continue
            raise ProfileError(f"Target profile {path}: missing section [{section}].")
        for key, value in table.items():
            if section == "" and key in _SCHEMA:
                continue
            dotted = f"{section}.{key}" if section else key
            if key not in spec:
                raise ProfileError(
                    f"Target profile {path}: unknown key '{dotted}'. Valid keys in [{section}]: {', '.join(sorted(spec))}."
                )
            types, _, choices = spec[key]
            if (
                isinstance(value, bool)
                and types is not bool
                and bool not in (types if isinstance(types, tuple) else (types,))
            ):
                ok = False
            else:
                ok = isinstance(value, types)
            if not ok:
                raise ProfileError(
                    f"Target profile {path}: key '{dotted}' must be {_type_name(types)}; received {value!r}."
                )
            if choices is not None and value not in choices:
                raise ProfileError(
                    f"Target profile {path}: key '{dotted}' must be one of {', '.join(map(str, choices))}; received {value!r}."
                )
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ProfileError(f"Target profile {path}: key '{dotted}' must not be negative; received {value}.")
        for key, (_, required, _) in spec.items():
            if required and key not in table:
                dotted = f"{section}.{key}" if section else key
                raise ProfileError(f"Target profile {path}: missing required key '{dotted}'.")
    quant = raw["quantization"]
    for dtype in quant["io_dtypes_allowed"]:
        if dtype not in IO_DTYPES:
            raise ProfileError(
                f"Target profile {path}: key 'quantization.io_dtypes_allowed' may hold {', '.join(IO_DTYPES)}; received {dtype!r}."
            )
    if quant["io_dtype"] not in quant["io_dtypes_allowed"]:
        raise ProfileError(
            f"Target profile {path}: key 'quantization.io_dtype' ({quant['io_dtype']}) is not in 'quantization.io_dtypes_allowed'."
        )
    for limit, value in raw["ops"].get("limits", {}).items():
        if limit not in _KNOWN_LIMITS:
            raise ProfileError(
                f"Target profile {path}: unknown key 'ops.limits.{limit}'. Valid limits: {', '.join(sorted(_KNOWN_LIMITS))}."
            )
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ProfileError(
                f"Target profile {path}: key 'ops.limits.{limit}' must be a positive integer; received {value!r}."
            )
    for fmt in raw.get("formats", ["tflite"]):
        if fmt not in FORMATS:
            raise ProfileError(f"Target profile {path}: key 'formats' may hold {', '.join(FORMATS)}; received {fmt!r}.")
    if raw["runtime"]["name"] == "tflite-micro+ethos-u" and "npu" not in raw:
        raise ProfileError(f"Target profile {path}: runtime 'tflite-micro+ethos-u' needs an [npu] section.")
    if "latency" in raw:
        _validate_latency(raw, path)


def _validate_latency(raw: dict[str, Any], path: Path) -> None:
    """A latency table is only usable with a clock, and every entry is a positive cycle count per op type."""
    if not raw["device"].get("clock_mhz"):
        raise ProfileError(
            f"Target profile {path}: section [latency] needs 'device.clock_mhz' to turn cycles into time."
        )
    table = raw["latency"]["cycles_per_mac"]
    if not table:
        raise ProfileError(f"Target profile {path}: key 'latency.cycles_per_mac' must name at least one op type.")
    for op, value in table.items():
        if op != "default" and not (op.replace("_", "").isalnum() and op.upper() == op):
            raise ProfileError(
                f"Target profile {path}: key 'latency.cycles_per_mac.{op}' must be a TFLite op name in capitals "
                "(CONV_2D, FULLY_CONNECTED) or 'default'."
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ProfileError(
                f"Target profile {path}: key 'latency.cycles_per_mac.{op}' must be a positive number; received {value!r}."
            )
    overhead = raw["latency"].get("overhead_cycles_per_op", 0)
    if overhead < 0:
        raise ProfileError(
            f"Target profile {path}: key 'latency.overhead_cycles_per_op' must not be negative; received {overhead}."
        )


def read_op_list(name: str, path: Path | None = None) -> frozenset[str]:
    """Op names from a shipped list: tflm (column 1 of every row) or edgetpu (section B names)."""
    if name in (ALL_BUILTINS, ONNX_OPS):
        return frozenset()
    file = op_list_path(name)
    if not file.is_file():
        shipped = sorted(p.name.removesuffix("_ops.txt") for p in file.parent.glob("*_ops.txt"))
        where = f"Target profile {path}: " if path else ""
        raise ProfileError(
            f"{where}key 'ops.list' names an unknown op list {name!r}. Valid lists: {', '.join([ALL_BUILTINS, ONNX_OPS, *shipped])}."
        )
    names: set[str] = set()
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if name == "edgetpu":
            if cols[0] == "B":
                names.add(cols[2].split(" ")[0])
        else:
            names.add(cols[0])
    return frozenset(names)


def load_profile(spec: str | Path) -> TargetProfile:
    """Load a shipped profile by name, or a user's profile by path, validated."""
    path = _resolve_path(str(spec))
    sources: dict[str, str] = {}
    raw = _load_raw(path, sources)
    _validate(raw, path)
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
