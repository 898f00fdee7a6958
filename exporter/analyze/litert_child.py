"""LiteRT runs of a converted model, in a child process: ``python -m exporter.analyze.litert_child REQUEST.json``.

An export runs every model it wrote through LiteRT: the fidelity check, the per-layer error, and with
``--cluster`` the statistics the int8 clustering takes layer by layer. That is native code on a file a converter just
produced, so it runs where a crash ends only the request: in a process forked from the export's converter
host (no start-up cost beyond the fork), or a one-shot child outside an export. A crash is a one-line
ConversionError; an export never runs a model in LiteRT in its own process (it only asks LiteRT's loader
to verify a file, exporter.verify.integrity).

Tasks: ``run`` (outputs of the model on (N, ...) inputs, real-valued, as
:func:`exporter.analyze.inference.run_tflite`), ``cluster``
(:func:`exporter.compress.int8_cluster.cluster_where_tables_pay`) and ``layer_errors``
(:func:`exporter.analyze.layer_error.layer_errors`, for ``--per-layer``). Arrays travel as .npy files in the
caller's private folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import scratch_dir
from ..childproc import first_line, log_tail, signal_name
from ..errors import ConversionError

_MODULE = "exporter.analyze.litert_child"
#: A fidelity run of a big model on 200 samples takes a minute; this only stops a hung child.
TIMEOUT_S = 3600.0
#: Set to a task name to make that task abort (tests of the parent's crash handling).
CRASH_ENV = "EDGEPORT_TEST_LITERT_CRASH"


@dataclass(frozen=True)
class ClusterResult:
    """What the clustering child returns: the summary line and the report's dictionary."""

    text: str
    data: dict[str, Any]

    def summary(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def tensors(self) -> list[Any]:
        return list(self.data.get("tensors") or [])


def run_tflite_in_child(model: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``run_tflite(model, inputs)`` in a child; a crash or timeout is a one-line ConversionError."""
    with scratch_dir("edgeport-litert-") as work:
        request = {"task": "run", "model": _save_model(work, model), "inputs": _save(work, "input", inputs)}
        request["output_dir"] = str(work)
        result = _run(request, work, "running the converted model on the check samples")
        return [np.load(path) for path in result["outputs"]]


def cluster_in_child(
    model: bytes, arrays: Sequence[np.ndarray], clusters: int, *, max_decoded_bytes: int | None = None
) -> tuple[bytes, ClusterResult]:
    """``cluster_where_tables_pay(model, arrays, clusters, max_decoded_bytes=...)`` in a child (LiteRT and the
    LUT compressor run there)."""
    with scratch_dir("edgeport-litert-") as work:
        request = {
            "task": "cluster",
            "model": _save_model(work, model),
            "inputs": _save(work, "calib", arrays),
            "clusters": clusters,
            "max_decoded": max_decoded_bytes,
            "output": str(work / "clustered.tflite"),
        }
        result = _run(request, work, f"clustering the int8 weights to {clusters} values")
        return Path(request["output"]).read_bytes(), ClusterResult(result["summary"], result["report"])


def layer_errors_in_child(
    float_model: bytes, int8_model: bytes, inputs: Sequence[np.ndarray], layers: dict[str, str]
) -> Any:
    """:func:`exporter.analyze.layer_error.layer_errors` in a child; returns its LayerErrorReport."""
    import pickle

    with scratch_dir("edgeport-litert-") as work:
        request = {
            "task": "layer_errors",
            "model": _save_model(work, int8_model),
            "float_model": _save_model(work, float_model, "float.tflite"),
            "inputs": _save(work, "input", inputs),
            "layers": dict(layers),
            "output": str(work / "layer_errors.pickle"),
        }
        _run(request, work, "measuring the per-layer error")
        return pickle.loads(Path(request["output"]).read_bytes())  # written by this same code, in our own child


def _save_model(work: Path, model: bytes, name: str = "model.tflite") -> str:
    path = work / name
    path.write_bytes(model)
    return str(path)


def _save(work: Path, stem: str, arrays: Sequence[np.ndarray]) -> list[str]:
    paths = []
    for i, array in enumerate(arrays):
        path = work / f"{stem}_{i}.npy"
        np.save(path, np.ascontiguousarray(array))  # the caller's dtype: the child quantizes exactly as in-process
        paths.append(str(path))
    return paths


def _run(request: dict[str, Any], work: Path, what: str) -> dict[str, Any]:
    from ..workers import run_in_worker

    try:
        run = run_in_worker(_MODULE, request, work, request["task"], timeout_s=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"LiteRT did not finish {what} within {TIMEOUT_S:.0f} s.") from exc
    result = run.result or {}
    if run.crashed:
        raise ConversionError(
            f"LiteRT crashed {what} ({signal_name(run.returncode)}): {log_tail(run.log_path) or 'no message'}; "
            "no files were written.",
            hint="Re-run with --debug and report the model to edgeport.",
        )
    if not result.get("ok"):
        raise ConversionError(f"LiteRT failed {what}: {result.get('error', 'no message')}.")
    return result


# --- the child -------------------------------------------------------------------------------------


def _task_run(request: dict[str, Any]) -> dict[str, Any]:
    from .inference import run_tflite

    model = Path(request["model"]).read_bytes()
    outputs = run_tflite(model, [np.load(p) for p in request["inputs"]])
    paths = []
    for i, array in enumerate(outputs):
        path = Path(request["output_dir"]) / f"output_{i}.npy"
        np.save(path, array)
        paths.append(str(path))
    return {"ok": True, "outputs": paths}


def _task_cluster(request: dict[str, Any]) -> dict[str, Any]:
    from ..compress.int8_cluster import cluster_where_tables_pay

    model = Path(request["model"]).read_bytes()
    arrays = [np.load(p) for p in request["inputs"]]
    clustered, report = cluster_where_tables_pay(
        model, arrays, request["clusters"], max_decoded_bytes=request.get("max_decoded")
    )
    Path(request["output"]).write_bytes(clustered)
    return {"ok": True, "summary": report.summary(), "report": report.to_dict()}


def _task_layer_errors(request: dict[str, Any]) -> dict[str, Any]:
    import pickle

    from .layer_error import layer_errors

    report = layer_errors(
        Path(request["float_model"]).read_bytes(),
        Path(request["model"]).read_bytes(),
        [np.load(p) for p in request["inputs"]],
        request["layers"],
    )
    Path(request["output"]).write_bytes(pickle.dumps(report))
    return {"ok": True}


_TASKS = {"run": _task_run, "cluster": _task_cluster, "layer_errors": _task_layer_errors}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    if os.environ.get(CRASH_ENV) == request["task"]:
        os.abort()
    try:
        result = _TASKS[request["task"]](request)
    except Exception as exc:  # reported to the parent, which words it
        result = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}", "traceback": traceback.format_exc()}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
