"""Is a LUT-compressed model bit-identical to its uncompressed twin in TFLite Micro, and what RAM does it need?

:func:`check_bit_exact` runs each model in its own child (``python -m exporter.compress.lut_check
REQUEST.json``, started through :func:`exporter.childproc.run_worker` like the converter workers): a
TFLite Micro ``abort()`` or segfault on the compressed model is a failed check, never a dead
edgeport. Both children run the same samples; the parent compares every output byte.

The arena needs of a compressed model differ from the uncompressed one's in a way firmware must
know. DECODE writes the whole decoded tensor before its consumer runs, and by default that output
is an ordinary arena tensor (in the planned "head", alive from the DECODE to its consumer): on the
AD autoencoder the minimum arena goes from 4,632 B to 87,976 B, the size of its largest decoded
weight matrix (640x128). Given ``alt_decompression_memory`` (``MicroInterpreter::
SetDecompressionMemory``), DECODE writes there instead when one of its outputs fits, and the arena
keeps only DECODE's small persistent state. The check reports both layouts: the arena alone, and
the arena plus the smallest alternate decompression region that keeps decoded tensors out of it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import scratch_dir
from ..childproc import first_line, log_tail, run_worker, signal_name
from ..errors import NotSupportedError, UsageError

_MODULE = "exporter.compress.lut_check"
#: One child per model; VWW (20 samples, arena bisection) takes about 3 s.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Mismatch:
    """The first output that differed: output index, sample index, largest |difference| in output units."""

    output: int
    sample: int
    max_abs_diff: float
    detail: str = ""


@dataclass(frozen=True)
class ArenaNeeds:
    """TFLite Micro RAM for the uncompressed and the compressed model (host x86-64 figures, bytes)."""

    reference: int
    #: The compressed model with decoded tensors in the arena (no alternate decompression memory):
    #: the MODEL_ARENA_SIZE for firmware that does not call SetDecompressionMemory.
    compressed: int
    #: The smallest alternate decompression region that holds every DECODE output...
    alt_decompression: int
    #: ...and the arena the compressed model then needs besides it.
    compressed_with_alt: int
    method: str = ""


@dataclass(frozen=True)
class LutCheck:
    """The verdict of :func:`check_bit_exact`."""

    bit_exact: bool
    samples: int
    outputs: int
    mismatch: Mismatch | None = None
    #: Why the compressed model could not run at all (its child crashed or TFLite Micro refused it).
    error: str | None = None
    arena: ArenaNeeds | None = None
    interpreter_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            return f"TFLite Micro check failed: {self.error}"
        if not self.bit_exact and self.mismatch is not None:
            m = self.mismatch
            return f"NOT bit-exact: output {m.output} of sample {m.sample} differs by up to {m.max_abs_diff:g}" + (
                f" ({m.detail})" if m.detail else ""
            )
        text = f"bit-exact in TFLite Micro on {self.samples} samples x {self.outputs} outputs"
        if self.arena:
            a = self.arena
            text += (
                f"; arena {a.reference:,} B -> {a.compressed:,} B with decoded weights in the arena, "
                f"or {a.compressed_with_alt:,} B + {a.alt_decompression:,} B decompression memory"
            )
        return text


def check_bit_exact(
    reference: bytes,
    compressed: bytes,
    inputs: Sequence[Any],
    *,
    arena: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LutCheck:
    """Run both models in TFLite Micro (each in a child process) on every sample and compare all outputs.

    ``inputs``: one entry per sample, an array for a single-input model or a sequence of arrays (one
    per input) otherwise; a batch dimension of 1 is optional, and float data for an integer input is
    quantized with the input's scale and zero point, as firmware would. ``arena`` also measures the
    arena needs (:class:`ArenaNeeds`). A compressed model that crashes TFLite Micro gives
    ``bit_exact=False`` with ``error``; a reference model that does is :class:`NotSupportedError`.
    """
    from concurrent.futures import ThreadPoolExecutor

    samples = _samples(inputs)
    with scratch_dir("edgeport-lutcheck-") as work:
        _write_inputs(work, samples)
        with ThreadPoolExecutor(max_workers=2) as pool:  # two independent children: side by side
            pending = pool.submit(_run_child, compressed, "compressed", work, arena, timeout_s)
            ref = _run_child(reference, "reference", work, arena, timeout_s)
            got = pending.result()
        if ref.get("error"):
            raise NotSupportedError(f"TFLite Micro cannot run the uncompressed model: {ref['error']}.")
        if got.get("error"):
            return LutCheck(False, len(samples), ref["outputs"], error=got["error"], interpreter_version=ref["version"])
        mismatch = _compare(work, len(samples), ref, got)
    needs = None
    if arena:
        needs = ArenaNeeds(
            reference=ref["arena"]["bytes"],
            compressed=got["arena"]["bytes"],
            alt_decompression=got["alt"]["alt_bytes"],
            compressed_with_alt=got["alt"]["arena_bytes"],
            method=got["arena"]["method"] + "; with alternate decompression memory: " + got["alt"]["method"],
        )
    return LutCheck(mismatch is None, len(samples), ref["outputs"], mismatch, None, needs, ref["version"])


def tflm_outputs(model: bytes, inputs: Sequence[Any], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[np.ndarray]:
    """Raw outputs of ``model`` in TFLite Micro (a child process), stacked over the samples: how a
    LUT-compressed file, which LiteRT cannot load (no DECODE kernel), is evaluated on the host."""
    samples = _samples(inputs)
    with scratch_dir("edgeport-tflm-run-") as work:
        _write_inputs(work, samples)
        got = _run_child(model, "run", work, False, timeout_s)
        if got.get("error"):
            raise NotSupportedError(f"TFLite Micro cannot run the model: {got['error']}.")
        with np.load(got["outputs_path"]) as data:
            return [np.stack([data[f"s{i}_{k}"][0] for i in range(len(samples))]) for k in range(got["outputs"])]


def _write_inputs(work: Path, samples: list[list[np.ndarray]]) -> None:
    """The samples every child reads, keyed ``s<sample>_<input>``."""
    np.savez(work / "inputs.npz", **{f"s{i}_{j}": a for i, arrays in enumerate(samples) for j, a in enumerate(arrays)})


def _samples(inputs: Sequence[Any]) -> list[list[np.ndarray]]:
    if isinstance(inputs, np.ndarray):
        inputs = list(inputs)
    if not len(inputs):
        raise UsageError("check_bit_exact needs at least one input sample.", hint="Pass the calibration samples.")
    return [[np.asarray(a) for a in s] if isinstance(s, (list, tuple)) else [np.asarray(s)] for s in inputs]


def _run_child(model: bytes, tag: str, work: Path, arena: bool, timeout_s: float) -> dict[str, Any]:
    path = work / f"{tag}.tflite"
    path.write_bytes(model)
    request = {
        "model": str(path),
        "inputs": str(work / "inputs.npz"),
        "outputs": str(work / f"{tag}.outputs.npz"),
        "capture": str(work / f"{tag}.stderr.txt"),
        "arena": arena,
        "alt": arena and tag == "compressed",
    }
    try:
        run = run_worker(_MODULE, request, work, tag, timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"TFLite Micro did not finish within {timeout_s:.0f} s"}
    if run.crashed:
        capture = Path(request["capture"])
        said = log_tail(capture) if capture.is_file() else ""
        said = said or log_tail(run.log_path)
        reason = (run.result or {}).get("error") or f"TFLite Micro crashed ({signal_name(run.returncode)})"
        return {"error": reason + (f" after printing: {said}" if said and said not in reason else "")}
    return run.result


def _compare(work: Path, n: int, ref: dict[str, Any], got: dict[str, Any]) -> Mismatch | None:
    if ref["outputs"] != got["outputs"]:
        return Mismatch(0, 0, math.inf, f"{ref['outputs']} outputs vs {got['outputs']}")
    with np.load(ref["outputs_path"]) as a, np.load(got["outputs_path"]) as b:
        for i in range(n):
            for k in range(ref["outputs"]):
                x, y = a[f"s{i}_{k}"], b[f"s{i}_{k}"]
                if x.shape != y.shape or x.dtype != y.dtype:
                    return Mismatch(k, i, math.inf, f"{x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
                if not np.array_equal(x, y):
                    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                    return Mismatch(
                        k, i, float(np.nanmax(diff)), f"{int(np.count_nonzero(diff))} of {diff.size} values"
                    )
    return None


# --- the child -----------------------------------------------------------------------------------


def _child(request: dict[str, Any]) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as schema
    from tflite_micro.python.tflite_micro import runtime

    from ..benchmark.host import interpreter_version
    from ..benchmark.tflm import captured_stderr, find_min_arena, generous_arena
    from .lut_alt import min_alt_layout

    blob = Path(request["model"]).read_bytes()
    main = schema.Model.GetRootAs(bytearray(blob), 0).Subgraphs(0)
    n_in, n_out = main.InputsLength(), main.OutputsLength()
    capture = Path(request["capture"])
    version = interpreter_version("tflite-micro")
    with captured_stderr(capture):
        try:
            interp = runtime.Interpreter.from_bytes(blob, arena_size=generous_arena(len(blob)))
        except RuntimeError as exc:
            return {"ok": False, "error": f"TFLite Micro refused the model ({first_line(exc)})"}
    details = [interp.get_input_details(j) for j in range(n_in)]
    outputs: dict[str, np.ndarray] = {}
    with np.load(request["inputs"]) as data:
        count = len({k.split("_")[0] for k in data.files})
        for i in range(count):
            interp.reset()
            for j, detail in enumerate(details):
                interp.set_input(_fit(data[f"s{i}_{j}"], detail), j)
            with captured_stderr(capture):
                interp.invoke()
            for k in range(n_out):
                outputs[f"s{i}_{k}"] = np.array(interp.get_output(k))
    np.savez(request["outputs"], **outputs)
    result: dict[str, Any] = {"ok": True, "outputs": n_out, "outputs_path": request["outputs"], "version": version}
    if request.get("arena"):
        result["arena"] = find_min_arena(blob, n_in, capture, version)
    if request.get("alt") and request.get("arena"):
        result["alt"] = min_alt_layout(blob, n_in, capture, result["arena"]["bytes"])
    return result


def _fit(sample: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """One sample shaped and typed for an input: batch dimension added, floats quantized like firmware does."""
    shape, dtype = tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"])
    if sample.size != math.prod(shape):
        raise ValueError(f"a sample of shape {list(sample.shape)} for an input of shape {list(shape)}")
    sample = sample.reshape(shape)
    if np.issubdtype(sample.dtype, np.floating) and np.issubdtype(dtype, np.integer):
        from ..analyze.inference import quantize

        quant = detail.get("quantization_parameters") or {}
        scale = float((list(quant.get("scales", [])) or [1.0])[0]) or 1.0
        zero = int((list(quant.get("zero_points", [])) or [0])[0])
        sample = quantize(sample, dtype, scale, zero)
    return np.ascontiguousarray(sample.astype(dtype))


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    try:
        result = _child(request)
    except Exception as exc:  # reported to the parent as a failed run, with the first line
        result = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0 if result.get("ok") else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
