"""The converter host of one export (see :mod:`exporter.workerhost` for the child side).

An export converts the same model several times (the int8 model per quantization config, the
per-tensor Dense candidate, the float reference) and runs tf2onnx; each one-shot child paid a fresh
TensorFlow import. A :class:`WorkerPool` starts one host as soon as the export begins, so its TensorFlow
import overlaps the parent's, and every request runs in a process the host forks: up to ``size`` at
once, none paying an import. A request whose process crashes (the calibrator's segfault on a
non-unrolled LSTM) ends alone; the caller sees the same :class:`~exporter.childproc.ChildRun` as from a
one-shot child. Only standard-library imports at module level.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .childproc import ChildRun, WorkerFiles, child_env, run_worker

_ACTIVE: contextvars.ContextVar[WorkerPool | None] = contextvars.ContextVar("edgeport_pool", default=None)


class _Request:
    """One request's state on a host: the child's pid once started, its exit status once ended."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.status: int | None = None
        self.done = threading.Event()


class _Host:
    """One ``python -m exporter.workerhost`` child: it forks a process per request, so several run at once."""

    def __init__(self, log_dir: Path, index: int, env: dict[str, str]) -> None:
        self.log_path = log_dir / f"host{index}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.workerhost"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self._lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._next_id = 0
        self._ready = threading.Event()
        self._dead = threading.Event()
        threading.Thread(target=self._read_replies, name="edgeport-host-reader", daemon=True).start()

    def _read_replies(self) -> None:
        """Route the host's protocol lines to the waiting requests; at EOF the host is gone, and so are they."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if reply.get("ready"):
                self._ready.set()
                continue
            with self._lock:
                request = self._requests.get(reply.get("id"))
            if request is None:
                continue
            if "pid" in reply:
                request.pid = int(reply["pid"])
            if "status" in reply:
                request.status = int(reply["status"])
                request.done.set()
        self.proc.wait()
        self._dead.set()
        with self._lock:
            for request in self._requests.values():
                request.done.set()  # status None: the host died under it

    def alive(self) -> bool:
        return not self._dead.is_set() and self.proc.poll() is None

    def _wait_ready(self, deadline: float) -> bool:
        while not self._ready.wait(timeout=0.05):
            if self._dead.is_set():
                return False
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.proc.args, 0)
        return True

    def run(self, module: str, request_path: Path, log_path: Path, timeout_s: float) -> int | None:
        """Exit status of the request (None: the host died before it ended); its output goes to ``log_path``."""
        deadline = time.monotonic() + timeout_s
        request = _Request()
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._requests[ident] = request
        try:
            try:
                if not self._wait_ready(deadline):
                    return None
            except subprocess.TimeoutExpired:
                self.kill()  # still importing TensorFlow after the whole timeout: it is stuck
                raise
            line = {"id": ident, "module": module, "request": str(request_path), "log": str(log_path)}
            assert self.proc.stdin is not None
            try:
                with self._lock:
                    self.proc.stdin.write((json.dumps(line) + "\n").encode())
                    self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return None
            if not request.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                self._kill_child(request)
                raise subprocess.TimeoutExpired(self.proc.args, timeout_s)
            return request.status
        finally:
            with self._lock:
                self._requests.pop(ident, None)
            if request.status is None:
                self._append_host_log(log_path)

    def _kill_child(self, request: _Request) -> None:
        if request.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(request.pid, signal.SIGKILL)

    def _append_host_log(self, log_path: Path) -> None:
        """The host's own log, for a request it died under (what TensorFlow printed before the crash)."""
        with contextlib.suppress(OSError):
            if not self._log.closed:
                self._log.flush()
            with self.log_path.open("rb") as log, log_path.open("ab") as out:
                out.write(log.read()[-65536:])

    @property
    def returncode(self) -> int:
        return self.proc.returncode if self.proc.returncode is not None else 1

    def kill(self) -> None:
        with self._lock:
            requests = list(self._requests.values())
        for request in requests:  # the children die with the host on Linux; elsewhere by their pids
            self._kill_child(request)
        if self.alive():
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """End the host. An idle host holds nothing worth a clean exit, and TensorFlow's teardown takes
        seconds: it is killed, so the export returns as soon as its work is done."""
        self.kill()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self._log.close()


class WorkerPool:
    """The converter host of one export and how many of its requests may run at once (thread-safe).

    ``size`` requests run side by side, each in its own process forked from the one host (default one per
    core, at most 2: each holds a model and its conversion). A request whose process crashes ends alone;
    a host that dies itself is replaced for the next request.
    """

    def __init__(self, size: int | None = None, *, env: dict[str, str] | None = None) -> None:
        self.size = max(1, size if size is not None else min(2, os.cpu_count() or 1))
        self._env = child_env(TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        self._log_dir = Path(tempfile.mkdtemp(prefix="edgeport-workers-"))
        self._host: _Host | None = None
        self._all: list[_Host] = []
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self.hosts_started = 0

    def warm(self) -> None:
        """Start the host now: its TensorFlow import runs while the parent loads the model."""
        self._live_host()

    def _live_host(self) -> _Host:
        with self._lock:
            if self._host is None or not self._host.alive():
                self.hosts_started += 1
                self._host = _Host(self._log_dir, self.hosts_started, self._env)
                self._all.append(self._host)
            return self._host

    def run(self, module: str, request: dict[str, Any], workdir: Path, tag: str, *, timeout_s: float) -> ChildRun:
        """Like :func:`exporter.childproc.run_worker`, in a process forked from the warm host; TimeoutExpired
        propagates."""
        files = WorkerFiles.write(request, workdir, tag)
        files.log.write_bytes(b"")
        with self._slots:
            host = self._live_host()
            status = host.run(module, files.request, files.log, timeout_s)
        return files.run(status if status is not None else (host.returncode or 1))  # died: its signal or status

    def close(self) -> None:
        """End the host and every request still running (a prefetched conversion nobody waits for after a
        failure or Ctrl-C): no TensorFlow process outlives the export."""
        with self._lock:
            hosts, self._host = list(self._all), None
        for host in hosts:
            host.close()
        import shutil

        shutil.rmtree(self._log_dir, ignore_errors=True)

    @contextlib.contextmanager
    def active(self) -> Iterator[WorkerPool]:
        """Make this the pool :func:`current` returns (the converter then uses it) until the block ends."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)
            self.close()


def current() -> WorkerPool | None:
    """The pool of the export running in this context, if any (else callers start one-shot children)."""
    return _ACTIVE.get()


def run_in_worker(module: str, request: dict[str, Any], workdir: Path, tag: str, *, timeout_s: float) -> ChildRun:
    """Run a worker request on the export's pool when one is active, else in a one-shot child."""
    pool = current()
    if pool is not None:
        return pool.run(module, request, workdir, tag, timeout_s=timeout_s)
    return run_worker(module, request, workdir, tag, timeout_s=timeout_s, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
