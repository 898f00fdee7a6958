"""Parse what ``edgetpu_compiler`` prints (stdout) and writes (``*_edgetpu.log``), versions 14 to 16.

Two shapes of text exist and both are accepted, alone or concatenated:

* the ``.log`` file: ``Edge TPU Compiler version N``, ``Input: x``, ``Output: y``, then the operator table;
* stdout: the version line, v16's ``Started a compilation timeout timer of N seconds.``, ``Model compiled
  successfully in N ms.``, ``Input model:``/``Input size:``/``Output model:``/``Output size:``, the three
  parameter-memory lines, ``Number of Edge TPU subgraphs``, ``Total number of operations``,
  ``Operation log``, the CPU/TPU op counts, the table with ``-s``, and errors (``ERROR: ...``,
  ``Internal compiler error. Aborting!``, ``Model could not be parsed``).

Sizes are printed rounded (``6.08MiB``); they are kept as the bytes that rounding stands for.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from . import statuses

_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?i?B)\s*$", re.IGNORECASE)
_ROW = re.compile(r"^(?P<op>[A-Za-z0-9_:\-]+)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")

_FIELDS: dict[str, tuple[str, str]] = {
    # line prefix (lowercase) -> (attribute, kind)
    "input model": ("input_model", "str"),
    "input": ("input_model", "str"),
    "output model": ("output_model", "str"),
    "output": ("output_model", "str"),
    "input size": ("input_size_bytes", "size"),
    "output size": ("output_size_bytes", "size"),
    "on-chip memory used for caching model parameters": ("on_chip_used_bytes", "size"),
    "on-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", "size"),
    "off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", "size"),
    "number of edge tpu subgraphs": ("subgraphs", "int"),
    "total number of operations": ("total_ops", "int"),
    "operation log": ("operation_log", "str"),
    "number of operations that will run on edge tpu": ("ops_on_tpu", "int"),
    "number of operations that will run on cpu": ("ops_on_cpu", "int"),
}
_FATAL = (
    "internal compiler error",
    "model could not be parsed",
    "invalid model",
    "registration failed",
    "model not quantized",
)


def parse_size(text: str) -> int | None:
    """``6.08MiB`` -> bytes (what the rounded figure stands for); None when not a size."""
    match = _SIZE.match(text)
    if not match:
        return None
    return int(round(float(match.group(1)) * _UNITS[match.group(2).upper()]))


@dataclass(frozen=True)
class OperatorStatus:
    """One row of the operator table."""

    operator: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status in statuses.ON_TPU


@dataclass
class CompilerLog:
    """Everything one compiler run printed, as data. Fields the text did not contain stay None."""

    version: str | None = None
    input_model: str | None = None
    output_model: str | None = None
    compile_ms: int | None = None
    timeout_s: int | None = None
    input_size_bytes: int | None = None
    output_size_bytes: int | None = None
    on_chip_used_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    operation_log: str | None = None
    operators: list[OperatorStatus] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    succeeded: bool | None = None

    @property
    def major_version(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None

    def mapped_counts(self) -> dict[str, int]:
        """Op -> how many the compiler mapped to the Edge TPU."""
        counts: Counter[str] = Counter()
        for row in self.operators:
            if row.mapped:
                counts[row.operator] += row.count
        return dict(counts)

    def cpu_counts(self) -> dict[str, int]:
        """Op -> how many stay on the host CPU (any status but "Mapped to Edge TPU")."""
        counts: Counter[str] = Counter()
        for row in self.operators:
            if not row.mapped:
                counts[row.operator] += row.count
        return dict(counts)

    def status_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for row in self.operators:
            counts[row.status] += row.count
        return dict(counts)

    @property
    def table_total(self) -> int:
        return sum(row.count for row in self.operators)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["operators"] = [asdict(row) for row in self.operators]
        data["mapped_counts"] = self.mapped_counts()
        data["cpu_counts"] = self.cpu_counts()
        return data


def parse_compiler_log(text: str) -> CompilerLog:
    """Parse compiler stdout and/or a ``*_edgetpu.log`` file (any of versions 14-16) into a :class:`CompilerLog`."""
    log = CompilerLog()
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        lower = line.lower()
        if lower.startswith("edge tpu compiler version"):
            if log.version is not None and log.operators:  # a second run's output: keep the first
                break
            log.version = line.split()[-1]
            in_table = False
            continue
        if lower.startswith("operator") and "count" in lower and "status" in lower:
            in_table = True
            continue
        if lower.startswith("error:") or any(f in lower for f in _FATAL):
            log.errors.append(line)
            if any(f in lower for f in _FATAL):
                log.succeeded = False
            continue
        match = re.match(r"model compiled successfully in (\d+) ?ms", lower)
        if match:
            log.compile_ms = int(match.group(1))
            log.succeeded = True if log.succeeded is None else log.succeeded
            continue
        match = re.match(r"started a compilation timeout timer of (\d+) seconds", lower)
        if match:
            log.timeout_s = int(match.group(1))
            continue
        if lower.startswith("compilation succeeded"):
            log.succeeded = True if log.succeeded is None else log.succeeded
            continue
        if ":" in line and not in_table:
            key, _, value = line.partition(":")
            spec = _FIELDS.get(key.strip().lower())
            if spec is not None:
                attr, kind = spec
                value = value.strip()
                if kind == "str":
                    setattr(log, attr, value)
                elif kind == "int" and value.isdigit():
                    setattr(log, attr, int(value))
                elif kind == "size":
                    setattr(log, attr, parse_size(value))
                continue
        if in_table:
            row = _ROW.match(line)
            if row:
                log.operators.append(OperatorStatus(row.group("op"), int(row.group("count")), row.group("status")))
                continue
            if ":" in line or line.startswith("Compilation"):
                in_table = False
    return log
