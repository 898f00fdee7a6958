"""Reading target profile files: locating them, resolving ``inherit``, and validating every key.

The schema below is the whole contract of a profile file: each key's type, whether it is required and
its allowed values; an unknown key or a wrong type is an error that names the key and the file.
:mod:`exporter.profiles` turns the validated tables into :class:`~exporter.profiles.TargetProfile` objects.
Only the standard library is imported here: ``edgeport targets`` must answer at once.
"""

from __future__ import annotations

import importlib.resources
import tomllib
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


def shipped_dir() -> Path:
    """The folder of profiles shipped with the package (``targets/`` in the source tree)."""
    return Path(str(importlib.resources.files("exporter.profiles_data")))


def op_list_path(name: str) -> Path:
    """Path of a shipped op list (``targets/ops/<name>_ops.txt``)."""
    return shipped_dir() / "ops" / f"{name}_ops.txt"


def available_targets() -> list[str]:
    """Names of the shipped target profiles, sorted."""
    return sorted(p.stem for p in shipped_dir().glob("*.toml") if not p.stem.startswith("_"))


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


def resolve_path(spec: str, relative_to: Path | None = None) -> Path:
    """A profile name (``cortex-m4``) or a path to a user's TOML file."""
    if spec.endswith(".toml") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        return path
    path = shipped_dir() / f"{spec}.toml"
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


def load_raw(path: Path, sources: dict[str, str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise ProfileError(f"Target profile {path}: 'inherit' forms a cycle ({chain}).")
    raw = _read_toml(path)
    parent = raw.get("inherit")
    base: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"Target profile {path}: key 'inherit' must be a profile name; received {parent!r}.")
        base = load_raw(_parent_path(parent, path), sources, (*seen, path.resolve()))
    return _merge(base, raw, sources, path.name)


def _parent_path(parent: str, path: Path) -> Path:
    """The file ``inherit = parent`` in ``path`` names; a wrong name is reported against that file and key."""
    if parent.endswith(".toml") or "/" in parent or "\\" in parent:
        parent_path = resolve_path(parent, path.parent)
        if not parent_path.is_file():
            raise ProfileError(
                f"Target profile {path}: key 'inherit' names {parent!r}, but {parent_path} does not exist.",
                hint="Point 'inherit' at an existing .toml file (a relative path is taken from this profile's folder) "
                "or at a shipped profile by name.",
            )
        return parent_path
    parent_path = shipped_dir() / f"{parent}.toml"
    if not parent_path.is_file():
        names = sorted(p.stem for p in shipped_dir().glob("*.toml"))
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


def validate(raw: dict[str, Any], path: Path) -> None:
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
