"""The device benchmark flow: check, push, run, parse, clean up — the same steps on a phone or the host.

Everything pushed lives in one fresh folder ``/data/local/tmp/edgeport-<random>/`` and is removed on
every way out (success, failure, timeout, disconnect, Ctrl-C). ``benchmark_model`` runs in the
background of the device shell with its pid written next to it, so clean-up can stop a run that is
still going after a timeout or Ctrl-C — and only that run: the pid is killed only while its command
line still names our folder.

Exit codes (see docs/android.md): a model the device cannot run (a delegate refuses it, an op is
missing, tensors cannot be allocated) is :class:`NotSupportedError` (3); anything else that fails —
no device, the device vanished, a timeout, a binary that cannot start, a tool error — is a
:class:`DeviceError` or :class:`UsageError` (2).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DeviceError, InputModelError, NotSupportedError, UsageError
from ...profiles import TargetProfile, load_profile
from .adb import find_device
from .benchmark_model import BenchmarkModelOptions, BenchmarkModelOutput, parse_benchmark_output
from .binary import locate_benchmark_binary, where_to_get
from .device import DEVICE_TMP, Device, DeviceDisconnected, DeviceTimeout
from .info import DeviceInfo, big_core_mask, check_abi, check_target, read_device_info

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
_PID_FILE = "benchmark_model.pid"

# Lines that mean "this model cannot run here (with this delegate)", not "the tool is broken".
_MODEL_UNSUPPORTED = re.compile(
    r"Failed to apply .*delegate|failed to (prepare|invoke)|Didn't find op for builtin opcode"
    r"|unresolved custom op|Select TensorFlow op|Failed to allocate tensors|Failed to construct interpreter"
    r"|not supported by .*delegate|Following operations are not supported",
    re.IGNORECASE,
)


@dataclass
class DeviceBenchmark:
    """One model benchmarked on one device by TensorFlow Lite's own ``benchmark_model``."""

    model: str
    model_bytes: int
    target: str
    method: str
    device: DeviceInfo
    options: BenchmarkModelOptions
    command: str
    binary: str
    result: BenchmarkModelOutput
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    #: The tool's full output, for --debug and bug reports (not in to_dict: op tables make it long).
    log: str = field(default="", repr=False)

    @property
    def inference_avg_ms(self) -> float | None:
        us = self.result.inference_avg_us
        return None if us is None else us / 1000.0

    def to_dict(self) -> dict[str, Any]:
        r, m = self.result, self.method
        prof = r.profile("inference")
        return {
            "method": m,
            "model": {"path": self.model, "bytes": self.model_bytes},
            "target": self.target,
            "device": self.device.to_dict(),
            "settings": {**self.options.to_dict(), "binary": self.binary, "command": self.command},
            "timings_us": {
                "method": m,
                "init": r.init_us,
                "first_inference": r.first_inference_us,
                "warmup_avg": r.warmup_avg_us,
                "inference_avg": r.inference_avg_us,
                "inference": r.inference.to_dict() if r.inference else None,
                "warmup": r.warmup.to_dict() if r.warmup else None,
                "format": r.timing_format,
            },
            "memory_mb": {
                "method": m,
                "init": r.memory_init_mb,
                "overall": r.memory_overall_mb,
                "kind": r.memory_kind,
                "peak_monitored": r.peak_memory_mb,
            },
            "delegates": [dataclasses.asdict(d) for d in r.delegates],
            "delegate_messages": list(r.delegate_messages),
            "op_profile": None
            if prof is None
            else {
                "method": m,
                "top_ops": [dataclasses.asdict(o) for o in r.top_ops(10)],
                "by_type": [dataclasses.asdict(o) for o in prof.by_type],
                "nodes_executed": prof.nodes_executed,
            },
            "notes": list(self.notes),
            "wall_s": round(self.wall_s, 3),
        }

    def render(self) -> str:
        r, o = self.result, self.options
        lines = [f"{Path(self.model).name} on {self.device.describe()}"]
        how = [
            f"{o.num_threads} thread{'s' if o.num_threads != 1 else ''}",
            f"XNNPACK {'on' if o.use_xnnpack else 'off'}",
        ]
        if o.use_gpu:
            how.append("GPU delegate")
        if o.use_nnapi:
            how.append("NNAPI delegate")
        how.append(f"{o.num_runs} runs after {o.warmup_runs} warm-up")
        if o.cpu_mask:
            how.append(f"cores {o.cpu_mask}")
        lines.append(f"  measured: {self.method}; " + ", ".join(how))
        rows = [
            ("init", r.init_us),
            ("first inference", r.first_inference_us),
            ("warm-up avg", r.warmup_avg_us),
        ]
        for label, value in rows:
            if value is not None:
                lines.append(f"  {label:<16}{_ms(value)}")
        if r.inference_avg_us is not None:
            text = f"  {'inference avg':<16}{_ms(r.inference_avg_us)}"
            s = r.inference
            if s is not None and s.std is not None:
                text += f" ± {_ms(s.std)} (min {_ms(s.min)}, max {_ms(s.max)}, n={s.count})"
            if s is not None and s.median is not None:
                text += f"; p5 {_ms(s.p5)}, median {_ms(s.median)}, p95 {_ms(s.p95)}"
            lines.append(text)
        if r.memory_overall_mb is not None:
            kind = "peak memory" if r.memory_kind == "peak" else "memory delta"
            lines.append(
                f"  {kind:<16}init {r.memory_init_mb:.1f} MB, overall {r.memory_overall_mb:.1f} MB (approximate)"
            )
        if r.peak_memory_mb is not None:
            lines.append(f"  {'peak memory':<16}{r.peak_memory_mb:.1f} MB (periodic monitoring)")
        for d in r.delegates:
            lines.append(
                f"  delegate        {d.delegate}: {d.replaced} of {d.total} nodes, {d.partitions} partition(s)"
            )
        top = r.top_ops(5)
        if top:
            lines.append("  slowest ops:")
            for op in top:
                pct = f" ({op.percent:.1f}%)" if op.percent is not None else ""
                lines.append(f"    {op.avg_ms:8.3f} ms{pct}  {op.node_type}  {op.name}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000.0:.2f} ms"


def _check_model(model_path: str | Path) -> Path:
    path = Path(model_path)
    if not path.is_file():
        raise InputModelError(f"Model file {path} does not exist.", hint="Pass the .tflite file edgeport exported.")
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[4:8] != b"TFL3":
        raise InputModelError(
            f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier).",
            hint="Benchmark the .tflite that 'edgeport export' wrote.",
        )
    from ...verify.graph import TFLiteGraph

    TFLiteGraph.from_file(path)  # structurally verified here: benchmark_model on a phone would just crash on it
    return path


def _resolve_options(
    profile: TargetProfile,
    *,
    threads: int | None,
    use_xnnpack: bool | None,
    use_gpu: bool,
    use_nnapi: bool,
    warmup_runs: int | None,
    num_runs: int | None,
    op_profiling: bool,
) -> BenchmarkModelOptions:
    bench = profile.benchmark
    return BenchmarkModelOptions(
        num_threads=bench.threads if threads is None else threads,
        use_xnnpack=bench.xnnpack if use_xnnpack is None else use_xnnpack,
        use_gpu=use_gpu,
        use_nnapi=use_nnapi,
        warmup_runs=bench.warmup if warmup_runs is None else warmup_runs,
        num_runs=bench.runs if num_runs is None else num_runs,
        enable_op_profiling=op_profiling,
    )


def bench_on_device(
    model_path: str | Path,
    profile: TargetProfile | str,
    device: str | Device = "adb",
    *,
    threads: int | None = None,
    use_xnnpack: bool | None = None,
    use_gpu: bool = False,
    use_nnapi: bool = False,
    warmup_runs: int | None = None,
    num_runs: int | None = None,
    big_cores: bool = False,
    op_profiling: bool = False,
    benchmark_binary: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DeviceBenchmark:
    """Benchmark a .tflite on an Android device with ``benchmark_model`` pushed over adb.

    ``device`` is ``"adb"`` (the one connected device), ``"adb:SERIAL"``, ``"local"`` (this computer
    standing in, for tests) or a :class:`Device` object. Unset settings come from the profile's
    ``[benchmark]`` table. ``timeout_s`` limits the benchmark run itself.
    """
    started = time.monotonic()
    model = _check_model(model_path)
    prof = profile if isinstance(profile, TargetProfile) else load_profile(profile)
    check_target(prof)
    options = _resolve_options(
        prof,
        threads=threads,
        use_xnnpack=use_xnnpack,
        use_gpu=use_gpu,
        use_nnapi=use_nnapi,
        warmup_runs=warmup_runs,
        num_runs=num_runs,
        op_profiling=op_profiling,
    )
    if timeout_s <= 0:
        raise UsageError(f"The benchmark timeout must be positive; received {timeout_s} s.")
    dev = find_device(device) if isinstance(device, str) else device
    try:
        info = read_device_info(dev)
        notes = check_abi(info, prof)
        binary = locate_benchmark_binary(info.abi, benchmark_binary)
        if big_cores:
            mask = big_core_mask(info.cpu_max_freq_khz)
            if mask is None:
                notes.append(
                    "--big-cores: the device reports no faster core cluster (no per-core max frequencies, or all equal); "
                    "ran on all cores."
                )
            else:
                options = dataclasses.replace(options, cpu_mask=mask)
                n_big = bin(int(mask, 16)).count("1")
                if options.num_threads > n_big:
                    notes.append(
                        f"{options.num_threads} threads share {n_big} big core{'s' if n_big != 1 else ''} (mask {mask})."
                    )
        workdir = f"{DEVICE_TMP}/edgeport-{secrets.token_hex(4)}"
        command, code, output = _push_run_clean(dev, workdir, model, binary, options, timeout_s, notes)
    finally:
        if isinstance(device, str):
            dev.close()
    parsed = parse_benchmark_output(output)
    if code != 0 or not parsed.ok:
        raise _failure(dev.serial, model, options, code, parsed, output, info.abi)
    return DeviceBenchmark(
        model=str(model),
        model_bytes=model.stat().st_size,
        target=prof.name,
        method=dev.method,
        device=info,
        options=options,
        command=command,
        binary=str(binary),
        result=parsed,
        notes=notes,
        wall_s=time.monotonic() - started,
        log=output,
    )


def _checked(dev: Device, cmd: str, what: str) -> None:
    code, out = dev.shell(cmd, timeout=60)
    if code != 0:
        last = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"
        raise DeviceError(
            f"Could not {what} on {dev.serial}: {last}.", hint=f"Check free space with 'adb shell df {DEVICE_TMP}'."
        )


def _push_run_clean(
    dev: Device,
    workdir: str,
    model: Path,
    binary: Path,
    options: BenchmarkModelOptions,
    timeout_s: float,
    notes: list[str],
) -> tuple[str, int, str]:
    """(command, exit code, output) of one benchmark run; the device folder is removed on every way out."""
    remote_binary = f"{workdir}/benchmark_model"
    remote_model = f"{workdir}/{model.name}"
    command = options.command(remote_binary, remote_model)
    q = shlex.quote
    # Backgrounded with its pid on file so clean-up can stop it after a timeout or Ctrl-C.
    run = f"{command} 2>&1 & echo $! > {q(workdir)}/{_PID_FILE}; wait $!"
    stage = "prepare"
    try:
        _checked(dev, f"mkdir -p {q(workdir)}", f"create {workdir}")
        stage = "push"
        dev.push(model, remote_model)
        dev.push(binary, remote_binary)
        _checked(dev, f"chmod +x {q(remote_binary)}", f"make {remote_binary} executable")
        stage = "run"
        log.debug("running on %s: %s", dev.serial, command)
        code, output = dev.shell(run, timeout=timeout_s)
    except DeviceDisconnected as exc:
        leftover = None if _cleanup(dev, workdir) else workdir
        raise DeviceDisconnected(dev.serial, during="the benchmark", leftover=leftover) from exc
    except DeviceTimeout as exc:
        _cleanup(dev, workdir)
        if stage != "run":
            raise
        raise DeviceTimeout(
            f"benchmark_model did not finish within {timeout_s:g} s on {dev.serial} ({options.num_runs} runs of {model.name}).",
            hint="Raise the time limit or lower the number of runs; the run was stopped and its files removed.",
        ) from exc
    except BaseException:  # Ctrl-C, push errors, anything: never leave files behind
        _cleanup(dev, workdir)
        raise
    if not _cleanup(dev, workdir):
        notes.append(f"Could not remove {workdir} from {dev.serial}; delete it with 'adb shell rm -rf {workdir}'.")
    return command, code, output


def _cleanup(dev: Device, workdir: str) -> bool:
    """Stop our benchmark_model if it still runs, delete the folder; False when the device refused."""
    q = shlex.quote
    pid_file = f"{q(workdir)}/{_PID_FILE}"
    stop = (
        f'p=$(cat {pid_file} 2>/dev/null) && [ -n "$p" ] && '
        f"tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -qF {q(workdir)} && kill -9 $p; true"
    )
    try:
        dev.shell(stop, timeout=30)
        dev.remove(workdir)
        return True
    except (DeviceError, OSError) as exc:
        log.warning("could not clean up %s on %s: %s", workdir, dev.serial, exc)
        return False


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def _failure(
    serial: str,
    model: Path,
    options: BenchmarkModelOptions,
    code: int,
    parsed: BenchmarkModelOutput,
    output: str,
    abi: str,
) -> Exception:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = parsed.last_error or (lines[-1] if lines else "no output")
    delegate = "the GPU delegate" if options.use_gpu else "NNAPI" if options.use_nnapi else "the CPU"
    if code == 0:
        return DeviceError(
            f"benchmark_model on {serial} finished but printed no timings; its last line: {last}",
            hint="Run it by hand with the command edgeport shows under --debug to see why.",
        )
    # 126/127: the shell could not execute it (wrong ABI, noexec, missing); the linker refuses a wrong build.
    if code in (126, 127) or any("CANNOT LINK EXECUTABLE" in ln for ln in lines):
        return DeviceError(f"benchmark_model could not start on {serial} (exit {code}): {last}", hint=where_to_get(abi))
    if any(_MODEL_UNSUPPORTED.search(f) for f in parsed.failures):
        first = parsed.first_error
        cause = f" (first error: {first})" if first and first != last else ""
        hint = (
            "Measure the CPU path without --use-gpu/--use-nnapi, or change the ops the delegate rejects."
            if options.use_gpu or options.use_nnapi
            else "Check the model's ops with 'edgeport export' for this target."
        )
        return NotSupportedError(f"{model.name} cannot run on {serial} with {delegate}: {last}{cause}", hint=hint)
    how = f"exit {code}" if code < 128 else f"killed by {_signal_name(code)}"
    return DeviceError(f"benchmark_model failed on {serial} ({how}): {last}")
