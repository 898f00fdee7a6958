"""Arm Vela for the Ethos-U targets: compile the int8 model for the NPU, in a child process, and read
its figures (SRAM, off-chip flash, NPU/CPU op split with Vela's reasons, cycles, inference time).

Vela is an optional dependency (``edgeport[npu]``); it is imported only in the child, which this
module also is (``python -m exporter.devices.cortex_m.vela ARGS`` runs Vela's own ``main``). Its
summary CSV holds the numbers; its console output holds the op split and, per op left on the CPU,
the reason ("Warning (supported operators) operator: X ... Reason: ...").
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...analyze.memo import content_key, shared, start_shared
from ...childproc import child_env
from ...errors import InternalError, NotSupportedError

log = logging.getLogger(__name__)

#: A hung compiler must not hang make; Vela compiles MLPerf Tiny models in about a second.
TIMEOUT_S = 600
_OPS_LINE = re.compile(r"^(CPU|NPU) operators = (\d+)", re.M)
_WARNING = re.compile(
    r"^Warning \(supported operators\) operator: (?P<op>[A-Z0-9_]+), ofm: '(?P<ofm>[^']*)'\n(?P<reason>(?:.+\n?)+)",
    re.M,
)


@dataclass(frozen=True)
class CpuOp:
    op: str
    output: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "output": self.output, "reason": self.reason}


@dataclass(frozen=True)
class VelaResult:
    """What Vela reported for one model, and the compiled model itself (not serialized)."""

    version: str
    accelerator: str
    system_config: str
    memory_mode: str
    sram_bytes: int
    off_chip_flash_bytes: int
    npu_ops: int
    cpu_ops: int
    cpu_op_details: tuple[CpuOp, ...]
    cycles_npu: int
    cycles_total: int
    inference_ms: float
    clock_hz: float
    macs: int
    model_bytes: int
    model: bytes = field(repr=False, default=b"")

    @property
    def method(self) -> str:
        return (
            f"estimate (Vela {self.version} performance model, {self.accelerator}, {self.system_config}, "
            f"{self.memory_mode}, NPU clock {self.clock_hz / 1e6:g} MHz): not a device measurement"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vela_version": self.version,
            "accelerator": self.accelerator,
            "system_config": self.system_config,
            "memory_mode": self.memory_mode,
            "sram_bytes": self.sram_bytes,
            "off_chip_flash_bytes": self.off_chip_flash_bytes,
            "npu_ops": self.npu_ops,
            "cpu_ops": self.cpu_ops,
            "cpu_op_details": [c.to_dict() for c in self.cpu_op_details],
            "cycles_npu": self.cycles_npu,
            "cycles_total": self.cycles_total,
            "inference_ms": round(self.inference_ms, 4),
            "npu_clock_mhz": self.clock_hz / 1e6,
            "macs": self.macs,
            "vela_model_bytes": self.model_bytes,
            "method": self.method,
        }


def available() -> bool:
    return importlib.util.find_spec("ethosu") is not None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ethos-u-vela")
    except PackageNotFoundError:
        return "unknown"


def config_file() -> Path:
    """Vela's bundled vela.ini, which holds the named system configs and memory modes."""
    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations:
        raise NotSupportedError("Arm Vela is not installed.", hint="pip install 'edgeport[npu]' (ethos-u-vela).")
    return Path(next(iter(spec.submodule_search_locations))) / "config_files" / "Arm" / "vela.ini"


def compile_bytes(model: bytes, npu: Any) -> VelaResult:
    """:func:`compile_model` on ``model``'s bytes, once per (bytes, NPU settings) in this process: a result
    :func:`prefetch` started is taken, not recomputed."""
    return shared(_key(model, npu), lambda: _compile_bytes(model, npu))


def prefetch(model: bytes, npu: Any) -> None:
    """Compile ``model`` in the background (Vela is a child process) for a later :func:`compile_bytes`."""
    blob = bytes(model)
    start_shared(_key(blob, npu), lambda: _compile_bytes(blob, npu))


def _key(model: bytes, npu: Any) -> str:
    return "vela:" + content_key(model, npu.accelerator, npu.system_config, npu.memory_mode, str(config_file()))


def _compile_bytes(model: bytes, npu: Any) -> VelaResult:
    from ...atomic import scratch_dir

    with scratch_dir("edgeport-vela-") as work:
        path = work / "model_int8.tflite"
        path.write_bytes(model)
        return compile_model(path, npu, work)


def compile_model(model_path: Path, npu: Any, work: Path) -> VelaResult:
    """Run Vela on ``model_path`` with the profile's ``[npu]`` settings; read its CSV and console output."""
    out_dir = work / "vela"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(model_path),
        "--accelerator-config", npu.accelerator,
        "--system-config", npu.system_config,
        "--memory-mode", npu.memory_mode,
        "--config", str(config_file()),
        "--output-dir", str(out_dir),
    ]  # fmt: skip
    root = str(Path(__file__).resolve().parents[3])
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "exporter.devices.cortex_m.vela", *args]
    log.debug("vela child: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise NotSupportedError(f"Vela did not finish within {TIMEOUT_S} s on {model_path.name}.") from exc
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip() and "dynamic signature" not in ln]
        raise NotSupportedError(
            f"Vela failed on {model_path.name} (exit code {proc.returncode})"
            + (f": {lines[-1][:300]}" if lines else "."),
            hint="Check that the model is int8 and that the profile's [npu] settings name a Vela configuration.",
        )
    stem = model_path.stem
    compiled = out_dir / f"{stem}_vela.tflite"
    summaries = sorted(out_dir.glob(f"{stem}_summary_*.csv"))
    if not compiled.is_file() or not summaries:
        raise InternalError(f"Vela wrote no {compiled.name} or summary CSV in {out_dir}.", hint="Re-run with --debug.")
    return parse(summaries[0], output, compiled.read_bytes(), npu)


def parse(summary_csv: Path, console: str, model: bytes, npu: Any) -> VelaResult:
    with summary_csv.open(newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    counts = {kind: int(n) for kind, n in _OPS_LINE.findall(console)}
    details = []
    for match in _WARNING.finditer(console):
        reason = " ".join(ln.strip() for ln in match.group("reason").splitlines() if ln.strip())
        details.append(CpuOp(match.group("op"), match.group("ofm"), reason.removeprefix("Reason: ")))
    return VelaResult(
        version=version(),
        accelerator=npu.accelerator,
        system_config=npu.system_config,
        memory_mode=npu.memory_mode,
        sram_bytes=round(float(row["sram_memory_used"]) * 1024),
        off_chip_flash_bytes=round(float(row["off_chip_flash_memory_used"]) * 1024),
        npu_ops=counts.get("NPU", 0),
        cpu_ops=counts.get("CPU", 0),
        cpu_op_details=tuple(details),
        cycles_npu=int(float(row["cycles_npu"])),
        cycles_total=int(float(row["cycles_total"])),
        inference_ms=float(row["inference_time"]) * 1e3,
        clock_hz=float(row["core_clock"]),
        macs=int(float(row["nn_macs"])),
        model_bytes=len(model),
        model=model,
    )


def _main(argv: list[str]) -> int:
    from ethosu.vela.vela import main

    return int(main(argv) or 0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
