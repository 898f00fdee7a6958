"""TensorFlow Lite's ``benchmark_model``: our options as its command line, and its log as numbers.

The parser reads what the tool prints across TensorFlow releases: the current ``Inference timings in
us: Init: .., First inference: .., Warmup (avg): .., Inference (avg): ..`` line and the older
``Average inference timings in us: Warmup: .., Init: .., Inference: ..``; the ``count=.. first=..``
statistics (with ``p5/median/p95`` when printed, ``(all same)`` when every run took as long);
doubles in C++ stream notation (``2.95034e+06``); both memory report styles; delegate messages;
failures; and op-profiling tables. Lines may carry ``INFO:``/``ERROR:`` or logcat prefixes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import UsageError

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_NUM = re.compile(NUMBER, re.IGNORECASE)
_LOGCAT = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s")
_LEVEL = re.compile(r"^(INFO|VERBOSE|WARNING|ERROR|DEBUG):\s*")
_KV = re.compile(rf"(\w+)=({NUMBER})", re.IGNORECASE)
_TIMINGS = re.compile(r"^Inference timings in us:\s*(.*)$")
_OLD_TIMINGS = re.compile(r"^Average inference timings in us:\s*(.*)$")
_TIMING_ITEM = re.compile(rf"(Init|First inference|Warmup \(avg\)|Inference \(avg\)|Warmup|Inference):\s*({NUMBER})")
_PEAK_OLD = re.compile(rf"^Peak memory footprint \(MB\):\s*init=({NUMBER})\s+overall=({NUMBER})")
_DELTA = re.compile(
    rf"^Memory footprint delta from the start of the tool \(MB\):\s*init=({NUMBER})\s+overall=({NUMBER})"
)
_PEAK_MONITOR = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*({NUMBER})")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) partitions?"
)
_DELEGATE_INFO = re.compile(
    r"(Created TensorFlow Lite .*delegate|delegate created|Explicitly applied .*delegate|Created \d+ GPU delegate kernels"
    r"|Failed to apply .*delegate|delegate application failure)",
    re.IGNORECASE,
)
_FAILURE = re.compile(
    r"^(Failed\b|Benchmarking failed|CANNOT LINK EXECUTABLE|Segmentation fault|Aborted|Illegal instruction|Bus error)"
    r"|: (not found|Permission denied|Exec format error|inaccessible or not found)\s*$"
    r"|\bfailed to (prepare|invoke|allocate)\b|\bNN API returned error\b",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^=+\s*(.+?)\s*=+$")


def _num(text: str) -> float:
    return float(text)


@dataclass(frozen=True)
class BenchmarkModelOptions:
    """One ``benchmark_model`` invocation; every flag is passed explicitly so the command says it all."""

    num_threads: int
    use_xnnpack: bool
    use_gpu: bool = False
    use_nnapi: bool = False
    warmup_runs: int = 1
    num_runs: int = 50
    enable_op_profiling: bool = False
    #: taskset mask (hex) pinning the run to some cores, e.g. "f0" for the big cluster.
    cpu_mask: str | None = None

    def __post_init__(self) -> None:
        if self.num_threads < 1 and self.num_threads != -1:
            raise UsageError(
                f"--threads must be at least 1 (or -1 for the tool's default); received {self.num_threads}."
            )
        if self.num_runs < 1:
            raise UsageError(f"--runs must be at least 1; received {self.num_runs}.")
        if self.warmup_runs < 0:
            raise UsageError(f"--warmup must be 0 or more; received {self.warmup_runs}.")
        if self.use_gpu and self.use_nnapi:
            raise UsageError("Choose one delegate: --use-gpu or --use-nnapi, not both.")
        if self.cpu_mask is not None and not re.fullmatch(r"[0-9a-fA-F]+", self.cpu_mask):
            raise UsageError(f"A CPU mask is hexadecimal (e.g. f0); received {self.cpu_mask!r}.")

    def flags(self, graph: str) -> list[str]:
        def b(value: bool) -> str:
            return "true" if value else "false"

        flags = [
            f"--graph={graph}",
            f"--num_threads={self.num_threads}",
            f"--use_xnnpack={b(self.use_xnnpack)}",
            f"--use_gpu={b(self.use_gpu)}",
            f"--use_nnapi={b(self.use_nnapi)}",
            f"--warmup_runs={self.warmup_runs}",
            f"--num_runs={self.num_runs}",
        ]
        if self.enable_op_profiling:
            flags.append("--enable_op_profiling=true")
        return flags

    def argv(self, binary: str, graph: str) -> list[str]:
        prefix = ["taskset", self.cpu_mask] if self.cpu_mask else []
        return [*prefix, binary, *self.flags(graph)]

    def command(self, binary: str, graph: str) -> str:
        """The shell command line, as a user would type it after ``adb shell``."""
        return shlex.join(self.argv(binary, graph))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatencyStats:
    """A ``count=.. first=.. curr=.. min=.. max=.. avg=.. std=..`` line, in microseconds."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None

    @classmethod
    def parse(cls, text: str) -> LatencyStats | None:
        values = {k.lower(): _num(v) for k, v in _KV.findall(text)}
        if "count" not in values:
            return None
        stats = cls(count=int(values["count"]))
        for key in ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"):
            if key in values:
                setattr(stats, key, values[key])
        if stats.min is None and stats.curr is not None:  # "count=N curr=X(all same)" or a single run
            stats.first = stats.first if stats.first is not None else stats.curr
            stats.min = stats.max = stats.avg = stats.curr
            stats.std = 0.0
        return stats

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DelegateReport:
    """``Replacing N out of M node(s) with delegate (NAME) node, yielding P partitions``."""

    delegate: str
    replaced: int
    total: int
    partitions: int

    @property
    def fully_delegated(self) -> bool:
        return self.replaced == self.total


@dataclass
class OpTiming:
    """One row of an op-profiling table (times in milliseconds)."""

    node_type: str
    name: str
    avg_ms: float
    percent: float | None = None
    first_ms: float | None = None
    start_ms: float | None = None
    times_called: int | None = None
    mem_kb: float | None = None


@dataclass
class OpTypeTiming:
    """One row of "Summary by node type"."""

    node_type: str
    count: int
    avg_ms: float
    percent: float | None = None
    times_called: int | None = None


@dataclass
class OpProfile:
    """The tables of one profiling section: initialization, or the regular (timed) runs."""

    section: str  # "init" | "inference" | "delegate"
    run_order: list[OpTiming] = field(default_factory=list)
    top_by_time: list[OpTiming] = field(default_factory=list)
    by_type: list[OpTypeTiming] = field(default_factory=list)
    nodes_executed: int | None = None
    timings: LatencyStats | None = None


@dataclass
class BenchmarkModelOutput:
    """Everything a ``benchmark_model`` log says, in its own units (microseconds, MB)."""

    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    inference: LatencyStats | None = None
    warmup: LatencyStats | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    #: "peak" for TF <= 2.4's "Peak memory footprint", "delta from tool start" for later releases.
    memory_kind: str | None = None
    peak_memory_mb: float | None = None
    delegates: list[DelegateReport] = field(default_factory=list)
    delegate_messages: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    op_profiles: list[OpProfile] = field(default_factory=list)
    #: "current" (Inference timings in us: ...) or "old" (Average inference timings in us: ...).
    timing_format: str | None = None

    @property
    def ok(self) -> bool:
        """Timings were printed and the tool did not report failure."""
        return self.inference_avg_us is not None and not any(
            f.lower().startswith("benchmarking failed") for f in self.failures
        )

    @property
    def last_error(self) -> str | None:
        """The tool's own last word on a failure ("Failed to apply NNAPI delegate.")."""
        meaningful = [f for f in self.failures if not f.lower().startswith("benchmarking failed")]
        return (meaningful or self.failures or [None])[-1]

    @property
    def first_error(self) -> str | None:
        """The first failure line: usually the root cause the later lines follow from."""
        return self.failures[0] if self.failures else None

    def profile(self, section: str = "inference") -> OpProfile | None:
        return next((p for p in self.op_profiles if p.section == section), None)

    def top_ops(self, n: int = 10) -> list[OpTiming]:
        """The slowest ops of the timed runs (the tool's own "Top by Computation Time" table)."""
        prof = self.profile("inference")
        if prof is None:
            return []
        rows = prof.top_by_time or sorted(prof.run_order, key=lambda r: r.avg_ms, reverse=True)
        return rows[:n]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["last_error"] = self.last_error
        return data


def _clean(line: str) -> tuple[str, str]:
    """(level, text): logcat and ``INFO:``-style prefixes removed."""
    line = _LOGCAT.sub("", line.rstrip("\r\n"))
    stripped = line.strip()
    m = _LEVEL.match(stripped)
    if m:
        return m.group(1), stripped[m.end() :].strip()
    return "", stripped


def _cells(line: str) -> list[str]:
    return [c for c in (c.strip() for c in re.split(r"\t|\s{2,}", line.strip())) if c]


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    m = _NUM.fullmatch(text.strip().rstrip("%"))
    return float(m.group(0)) if m else None


class _TableReader:
    """Op-profiling tables: a ``=== Title ===`` line, a ``[column]`` header row, tab-separated rows."""

    def __init__(self, out: BenchmarkModelOutput) -> None:
        self.out = out
        self.profile: OpProfile | None = None
        self.table: str | None = None
        self.columns: list[str] | None = None

    def section(self, name: str) -> None:
        self.profile = OpProfile(section=name)
        self.out.op_profiles.append(self.profile)
        self.table = self.columns = None

    def _current(self) -> OpProfile:
        if self.profile is None:
            self.section("inference")
        assert self.profile is not None
        return self.profile

    def heading(self, title: str) -> None:
        profile = self._current()
        if self.table is not None and title.lower() == "run order" and profile.run_order:
            self.section(profile.section)  # a second run-order table starts a new (unnamed) section
        self.table = title.lower()
        self.columns = None

    def feed(self, raw: str, text: str) -> bool:
        """Consume a table line; False when the line is not part of a table."""
        if self.table is None:
            return False
        if not text:
            self.table = self.columns = None
            return True
        if text.startswith("["):
            self.columns = [c.strip("[]").lower() for c in _cells(raw)]
            return True
        if self.columns is None:
            return False
        cells = _cells(raw)
        if len(cells) < len(self.columns):
            self.table = self.columns = None
            return False
        row = dict(
            zip(self.columns, cells[: len(self.columns) - 1] + [" ".join(cells[len(self.columns) - 1 :])], strict=True)
        )
        profile = self._current()
        if self.table.startswith("summary by node type"):
            profile.by_type.append(
                OpTypeTiming(
                    node_type=row.get("node type", ""),
                    count=int(_float_or_none(row.get("count")) or 0),
                    avg_ms=_float_or_none(row.get("avg ms")) or 0.0,
                    percent=_float_or_none(row.get("avg %")),
                    times_called=_int_or_none(row.get("times called")),
                )
            )
        else:
            op = OpTiming(
                node_type=row.get("node type", ""),
                name=row.get("name", ""),
                avg_ms=_float_or_none(row.get("avg ms")) or 0.0,
                percent=_float_or_none(row.get("%")),
                first_ms=_float_or_none(row.get("first")),
                start_ms=_float_or_none(row.get("start")),
                times_called=_int_or_none(row.get("times called")),
                mem_kb=_float_or_none(row.get("mem kb")),
            )
            (profile.top_by_time if self.table.startswith("top by") else profile.run_order).append(op)
        return True


def _int_or_none(text: str | None) -> int | None:
    value = _float_or_none(text)
    return None if value is None else int(value)


def parse_benchmark_output(text: str) -> BenchmarkModelOutput:
    """Read a ``benchmark_model`` log (stdout and stderr merged) into numbers."""
    out = BenchmarkModelOutput()
    tables = _TableReader(out)
    stats: list[LatencyStats] = []
    for raw in text.splitlines():
        raw = _LOGCAT.sub("", raw)
        level, line = _clean(raw)
        heading = _HEADING.match(line)
        if heading:
            tables.heading(heading.group(1))
            continue
        if tables.feed(raw, line):
            continue
        if not line:
            continue
        low = line.lower()
        if low.endswith(":") and "profiling info" in low:
            tables.section("init" if "initialization" in low else "delegate" if "delegate" in low else "inference")
            continue
        if low.startswith("number of nodes executed:") and tables.profile is not None:
            tables.profile.nodes_executed = _int_or_none(line.split(":", 1)[1])
            continue
        if low.startswith("timings (microseconds):") and tables.profile is not None:
            tables.profile.timings = LatencyStats.parse(line.split(":", 1)[1])
            continue
        if low.startswith("count="):
            parsed = LatencyStats.parse(line)
            if parsed is not None:
                stats.append(parsed)
            continue
        m = _TIMINGS.match(line)
        if m:
            items = dict(_TIMING_ITEM.findall(m.group(1)))
            out.timing_format = "current"
            out.init_us = _float_or_none(items.get("Init"))
            out.first_inference_us = _float_or_none(items.get("First inference"))
            out.warmup_avg_us = _float_or_none(items.get("Warmup (avg)"))
            out.inference_avg_us = _float_or_none(items.get("Inference (avg)"))
            continue
        m = _OLD_TIMINGS.match(line)
        if m:
            items = dict(_TIMING_ITEM.findall(m.group(1)))
            out.timing_format = "old"
            out.init_us = _float_or_none(items.get("Init"))
            out.warmup_avg_us = _float_or_none(items.get("Warmup"))
            out.inference_avg_us = _float_or_none(items.get("Inference"))
            continue
        m = _PEAK_OLD.match(line) or _DELTA.match(line)
        if m:
            out.memory_init_mb, out.memory_overall_mb = float(m.group(1)), float(m.group(2))
            out.memory_kind = "peak" if m.re is _PEAK_OLD else "delta from tool start"
            continue
        m = _PEAK_MONITOR.match(line)
        if m:
            out.peak_memory_mb = float(m.group(1))
            continue
        m = _REPLACING.search(line)
        if m:
            out.delegates.append(DelegateReport(m.group(3), int(m.group(1)), int(m.group(2)), int(m.group(4))))
            out.delegate_messages.append(line)
            continue
        is_failure = level == "ERROR" or bool(_FAILURE.search(line))
        if _DELEGATE_INFO.search(line):
            out.delegate_messages.append(line)
        if is_failure:
            out.failures.append(line)
    if stats:
        # The last statistics line is the timed runs; an earlier one is the warm-up (newer releases print both).
        out.inference = stats[-1]
        out.warmup = stats[-2] if len(stats) > 1 else None
    return out
