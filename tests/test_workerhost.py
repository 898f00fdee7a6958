"""The export's converter host forks a process per request: requests run side by side without a second
TensorFlow import, a crash or a timeout ends only its own request, and nothing outlives the pool.

The requests are real tf2onnx worker requests whose graph file is a named pipe: each child blocks reading
it until the test writes, so "both were running at once" is observed, not timed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from exporter import workers
from exporter.convert import onnx_worker

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see the children")

MODULE = "exporter.convert.onnx_worker"


def _request(fifo: Path, work: Path) -> dict:
    return {
        "task": "convert",
        "graph_path": str(fifo),
        "graph_inputs": ["x:0"],
        "graph_outputs": ["y:0"],
        "opset": 13,
        "input_names": ["x"],
        "output_names": ["y"],
        "dynamic_batch": False,
        "float_path": str(work / "float.onnx"),
    }


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def _wait_children(pool: workers.WorkerPool, count: int, timeout_s: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        host = pool._host
        if host is not None and host.alive():
            kids = _children(host.proc.pid)
            if len(kids) >= count:
                return kids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} request processes appeared")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _fifos(tmp_path: Path, n: int) -> list[Path]:
    paths = [tmp_path / f"graph{i}.pb" for i in range(n)]
    for p in paths:
        os.mkfifo(p)
    return paths


def _feed(fifo: Path) -> None:
    with fifo.open("wb") as pipe:
        pipe.write(b"not a GraphDef")


def test_two_requests_run_at_once_in_processes_forked_from_one_host(tmp_path):
    fifos = _fifos(tmp_path, 2)
    pool = workers.WorkerPool(size=2)
    runs: dict[int, object] = {}
    try:
        threads = [
            threading.Thread(
                target=lambda i=i: runs.__setitem__(
                    i, pool.run(MODULE, _request(fifos[i], tmp_path), tmp_path, f"r{i}", timeout_s=300)
                )
            )
            for i in range(2)
        ]
        for t in threads:
            t.start()
        kids = _wait_children(pool, 2)  # both children are blocked in their reads, at the same time
        assert len(kids) == 2
        for fifo in fifos:
            _feed(fifo)
        for t in threads:
            t.join(timeout=120)
    finally:
        pool.close()
    assert pool.hosts_started == 1, "one TensorFlow import served both"
    for i in range(2):
        run = runs[i]
        assert not run.crashed, run.log_path.read_text()
        assert run.result["ok"] is False and run.result["stage"] == "tf2onnx", "the worker ran and parsed the pipe"
        assert f"edgeport worker: {MODULE}" in run.log_path.read_text(), "each request has its own log"


def test_a_crashing_request_ends_alone_and_the_host_serves_the_next(tmp_path):
    pool = workers.WorkerPool(size=1, env={onnx_worker.CRASH_ENV: "convert"})
    try:
        crashed = pool.run(MODULE, _request(tmp_path / "missing.pb", tmp_path), tmp_path, "abort", timeout_s=300)
        assert crashed.crashed and crashed.returncode == -6, "SIGABRT in the request's own process"
        host = pool._host
        assert host is not None and host.alive(), "the host survived its child's abort"
        fine = pool.run(
            MODULE, dict(_request(tmp_path / "missing.pb", tmp_path), task="verify"), tmp_path, "next", timeout_s=300
        )
    finally:
        pool.close()
    assert pool.hosts_started == 1
    assert fine.returncode == 0 and fine.result is not None and fine.result["ok"] is False


def test_a_timeout_kills_only_that_request_and_close_kills_what_still_runs(tmp_path):
    fifos = _fifos(tmp_path, 2)
    pool = workers.WorkerPool(size=2)
    try:
        pool.warm()
        with pytest.raises(subprocess.TimeoutExpired):
            started = time.monotonic()
            threading.Thread(
                target=lambda: pool.run(MODULE, _request(fifos[1], tmp_path), tmp_path, "left", timeout_s=300),
                daemon=True,
            ).start()
            pool.run(MODULE, _request(fifos[0], tmp_path), tmp_path, "stuck", timeout_s=20)
        assert time.monotonic() - started < 120
        host = pool._host
        assert host is not None and host.alive(), "the host outlives a request's timeout"
        deadline = time.monotonic() + 30
        left = _wait_children(pool, 1)
        while len(left) != 1 and time.monotonic() < deadline:  # the killed one is reaped by the host
            time.sleep(0.05)
            left = _children(host.proc.pid)
        assert len(left) == 1, "the timed-out child was killed, the other still runs"
    finally:
        pool.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in left), "no request process outlives the pool"


def test_litert_crash_on_the_converted_model_is_one_line_not_fatal(tmp_path, monkeypatch, capsys):
    """The fidelity run of a model the converter wrote happens in a forked child: LiteRT aborting there is
    exit 4 with one line naming the signal, and edgeport itself survives to say so."""
    from cli_helpers import quiet_keras

    from exporter.analyze import litert_child
    from exporter.cli import main

    keras = quiet_keras()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((16, 8), dtype=np.float32))
    monkeypatch.setenv(litert_child.CRASH_ENV, "run")
    code = main(
        [
            "export",
            str(tmp_path / "m.keras"),
            "--target",
            "cortex-m4",
            "--calib",
            str(tmp_path / "calib.npy"),
            "-o",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert any("LiteRT crashed running the converted model" in line and "SIGABRT" in line for line in err), err
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_without_fork_the_host_runs_requests_itself_and_a_crash_costs_only_that_host(tmp_path):
    """EDGEPORT_WORKER_FORK=0 (the default off Linux, where forking after TensorFlow's import is unsafe): the
    host runs each request itself; a crash takes the host down, the caller sees the signal, and the next
    request gets a new host."""
    fine = _request(tmp_path / "missing.pb", tmp_path)
    pool = workers.WorkerPool(size=2, env={"EDGEPORT_WORKER_FORK": "0"})
    try:
        first = pool.run(MODULE, dict(fine, task="verify"), tmp_path, "inline", timeout_s=300)
        assert first.returncode == 0 and first.result is not None and first.result["ok"] is False
        assert pool.hosts_started == 1 and not _children(pool._host.proc.pid), "no child was forked"
    finally:
        pool.close()
    crashing = workers.WorkerPool(size=1, env={"EDGEPORT_WORKER_FORK": "0", onnx_worker.CRASH_ENV: "convert"})
    try:
        crashed = crashing.run(MODULE, fine, tmp_path, "abort", timeout_s=300)
        assert crashed.crashed and crashed.returncode == -6
        again = crashing.run(MODULE, dict(fine, task="verify"), tmp_path, "after", timeout_s=300)
        assert again.returncode == 0 and crashing.hosts_started == 2, "a new host for the next request"
    finally:
        crashing.close()
