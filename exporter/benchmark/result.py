"""What a benchmark measured, as data (``to_dict``) and as the block ``edgeport bench`` prints.

Every figure carries how it was obtained, because the numbers users most want (device latency, device
RAM) are exactly the ones a host run cannot give: the result says which interpreter and kernels ran,
on which CPU, and states plainly that host timings are not device timings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from ..report.report import human_bytes


@dataclass(frozen=True)
class Latency:
    """Statistics over the timed runs (milliseconds), plus every run for a latency plot."""

    runs: int
    #: Wall time of the timed loop (seconds): at least --min-time when one was given.
    elapsed_s: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float
    timings_ms: tuple[float, ...] = field(repr=False)

    @classmethod
    def from_timings(cls, timings_ms: list[float] | tuple[float, ...], *, elapsed_s: float | None = None) -> Latency:
        if not timings_ms:
            raise ValueError("no timed runs")
        values = sorted(timings_ms)
        return cls(
            runs=len(values),
            elapsed_s=sum(values) / 1000.0 if elapsed_s is None else elapsed_s,
            median_ms=statistics.median(values),
            mean_ms=statistics.fmean(values),
            p90_ms=percentile(values, 90),
            p99_ms=percentile(values, 99),
            min_ms=values[0],
            max_ms=values[-1],
            stdev_ms=statistics.stdev(values) if len(values) > 1 else 0.0,
            timings_ms=tuple(timings_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timings_ms"] = list(self.timings_ms)
        return data


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without importing numpy in the parent."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class ArenaMeasurement:
    """The TFLite Micro tensor arena a model needs on this host, found by allocating it for real.

    ``recorded_total_bytes`` is what TFLite Micro's RecordingMicroAllocator prints after a run with a
    generous arena. It is not always the minimum (measured: VWW needs 8 bytes less, hello_world 432
    bytes more, because planning memory used during AllocateTensors is freed before the total is
    taken), so ``bytes`` is the smallest ``arena_size`` that allocates and invokes, found by bisection,
    and ``minus_16_fails`` / ``minus_1_fails`` record that the verification allocations failed.
    """

    bytes: int
    recorded_total_bytes: int
    head_bytes: int | None
    tail_bytes: int | None
    minus_1_fails: bool
    minus_16_fails: bool
    attempts: int
    method: str
    interpreter_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArenaMeasurement:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BenchmarkResult:
    """One model through one target's interpreter on this host."""

    model: str
    model_format: str
    model_bytes: int
    target: str
    interpreter: str
    interpreter_version: str
    kernels: str
    xnnpack: bool | None
    threads_requested: int
    threads_used: int
    load_ms: float
    first_inference_ms: float
    warmup_runs: int
    min_time_s: float
    latency: Latency
    peak_rss_bytes: int
    baseline_rss_bytes: int
    rss_method: str
    host_cpu: str
    host_cores: int
    inputs: str
    #: Whether the host has x86 VNNI; None off x86 (see ``host_int8_dot_product`` there).
    host_has_vnni: bool | None = None
    #: Whether the host has int8 dot-product instructions (x86 VNNI or ARM asimddp), as phones do.
    host_int8_dot_product: bool | None = None
    #: The host CPU, its VNNI status and what that means for int8 timings here (host.int8_kernels).
    host_int8_note: str = ""
    arena: ArenaMeasurement | None = None
    device_note: str = ""
    notes: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        """How the timings were obtained, in the report-wide "measured (host, ...)" form."""
        name = {"litert": "LiteRT", "tflite-micro": "TFLite Micro", "onnxruntime": "onnxruntime"}[self.interpreter]
        return f"measured (host, {name} {self.interpreter_version})"

    @property
    def threads_capped(self) -> bool:
        return self.threads_used < self.threads_requested

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_dict()
        data["arena"] = self.arena.to_dict() if self.arena else None
        data["notes"] = list(self.notes)
        data["method"] = self.method
        data["threads_capped"] = self.threads_capped
        return data

    def render(self) -> str:
        """The terminal block: facts first, then the statistics, then what the numbers are not."""
        lat = self.latency
        threads = f"{self.threads_used}"
        if self.threads_capped:
            threads += f" (requested {self.threads_requested}, capped to the host's {self.host_cores} cores)"
        elif self.threads_requested != self.threads_used:
            threads += f" (requested {self.threads_requested})"
        engine = f"{self.method.removeprefix('measured (host, ').removesuffix(')')}"
        if self.xnnpack is not None:
            engine += f", XNNPACK {'on' if self.xnnpack else 'off'}"
        lines = [
            f"{self.target}: {self.model} ({human_bytes(self.model_bytes)} {self.model_format})",
            f"  interpreter   {engine}; kernels: {self.kernels}",
            f"  threads       {threads}",
            f"  host          {self.host_cpu}, {self.host_cores} cores",
            *([f"  host int8     {self.host_int8_note}"] if self.host_int8_note else []),
            f"  inputs        {self.inputs}",
            f"  load          {self.load_ms:.2f} ms (interpreter creation and tensor allocation)",
            f"  first run     {self.first_inference_ms:.3f} ms, then {self.warmup_runs} warm-up runs",
            f"  latency       median {_ms(lat.median_ms)}  mean {_ms(lat.mean_ms)}  p90 {_ms(lat.p90_ms)}  "
            f"p99 {_ms(lat.p99_ms)}",
            f"                min {_ms(lat.min_ms)}  max {_ms(lat.max_ms)}  stdev {_ms(lat.stdev_ms)}  "
            f"over {lat.runs} runs in {lat.elapsed_s:.2f} s",
            f"  peak memory   {human_bytes(self.peak_rss_bytes)} resident (process after imports: "
            f"{human_bytes(self.baseline_rss_bytes)})",
        ]
        if self.arena is not None:
            checks = "allocating 16 bytes less fails" if self.arena.minus_16_fails else "16 bytes less still allocated"
            lines.append(
                f"  arena         {self.arena.bytes:,} bytes ({human_bytes(self.arena.bytes)}): the smallest that "
                f"allocates and invokes; {checks}"
            )
        for note in self.notes:
            lines.append(f"  note          {note}")
        lines.append(f"  {self.method}. {self.device_note}")
        return "\n".join(lines)


def _ms(value: float) -> str:
    """Four significant digits (0.06342 ms, 5.548 ms, 600.6 ms), never scientific notation."""
    return f"{value:.0f} ms" if value >= 1000 else f"{value:.4g} ms"
