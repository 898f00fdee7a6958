"""Long-lived worker children for one export (see :mod:`exporter.workerhost` for the child side).

An export converts the same model several times (the int8 model per quantization config, the
per-tensor Dense candidate, the float reference); each one-shot child paid a fresh TensorFlow import.
A :class:`WorkerPool` starts its first host as soon as the export begins, so that host's TensorFlow
import overlaps the parent's, and reuses hosts for every request. Up to ``size`` requests run at
once (default one per core, at most 2: a host holds a TensorFlow and the model; an export uses one,
see exporter.pipeline). A host that crashes (the
calibrator's segfault on a non-unrolled LSTM) ends only the request it was running; the caller sees
the same :class:`~exporter.childproc.ChildRun` as from a one-shot child, and the next request gets a
new host. Only standard-library imports at module level.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import selectors
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


class _Host:
    """One ``python -m exporter.workerhost`` child and its log."""

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
        self._ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _reply(self, deadline: float) -> dict[str, Any] | None:
        """The host's next protocol line; None when it died first. TimeoutExpired after ``deadline``."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(self.proc.args, 0)
                if selector.select(timeout=min(left, 1.0)):
                    line = self.proc.stdout.readline()
                    if not line:
                        self.proc.wait()
                        return None
                    return json.loads(line)
                if not self.alive():
                    return None

    def run(self, module: str, request_path: Path, log_path: Path, timeout_s: float) -> int | None:
        """Exit status of the request (None: the host died running it); the request's log goes to ``log_path``."""
        deadline = time.monotonic() + timeout_s
        start = self.log_path.stat().st_size
        try:
            if not self._ready:
                if self._reply(deadline) is None:
                    return None
                self._ready = True
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps({"module": module, "request": str(request_path)}) + "\n").encode())
                self.proc.stdin.flush()
            except BrokenPipeError:
                return None
            reply = self._reply(deadline)
            return None if reply is None else int(reply.get("status", 1))
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            if not self._log.closed:
                self._log.flush()
            with self.log_path.open("rb") as log, log_path.open("wb") as out:
                log.seek(start)
                out.write(log.read())

    @property
    def returncode(self) -> int:
        return self.proc.returncode if self.proc.returncode is not None else 1

    def kill(self) -> None:
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
    """Hosts for one export; thread-safe, so independent conversions can run side by side."""

    def __init__(self, size: int | None = None, *, env: dict[str, str] | None = None) -> None:
        self.size = max(1, size if size is not None else min(2, os.cpu_count() or 1))
        self._env = child_env(TF_CPP_MIN_LOG_LEVEL="3", EDGEPORT_WORKER_PRELOAD="1", **(env or {}))
        self._log_dir = Path(tempfile.mkdtemp(prefix="edgeport-workers-"))
        self._idle: list[_Host] = []
        self._all: list[_Host] = []
        self._started = 0
        self._busy = 0
        self._lock = threading.Condition()
        self.hosts_started = 0

    def warm(self, hosts: int = 1) -> None:
        """Start ``hosts`` hosts now (at most the pool's size): their TensorFlow imports run while the parent
        loads the model."""
        with self._lock:
            while len(self._idle) + self._busy < min(hosts, self.size):
                self._idle.append(self._new_host())

    def _new_host(self) -> _Host:
        self.hosts_started += 1
        host = _Host(self._log_dir, self.hosts_started, self._env)
        self._all.append(host)
        return host

    def _acquire(self) -> _Host:
        with self._lock:
            while not self._idle and self._busy >= self.size:
                self._lock.wait()
            self._busy += 1
            while self._idle:
                host = self._idle.pop()
                if host.alive():
                    return host
                host.close()
        return self._new_host()

    def _release(self, host: _Host) -> None:
        with self._lock:
            self._busy -= 1
            if host.alive():
                self._idle.append(host)
            else:
                host.close()
            self._lock.notify()

    def run(self, module: str, request: dict[str, Any], workdir: Path, tag: str, *, timeout_s: float) -> ChildRun:
        """Like :func:`exporter.childproc.run_worker`, on a reused host; TimeoutExpired propagates."""
        files = WorkerFiles.write(request, workdir, tag)
        host = self._acquire()
        try:
            status = host.run(module, files.request, files.log, timeout_s)
        finally:
            self._release(host)
        return files.run(status if status is not None else (host.returncode or 1))  # died: its signal or status

    def close(self) -> None:
        """End every host, idle or still busy (a prefetched conversion nobody waits for after a failure or
        Ctrl-C): no TensorFlow process outlives the export."""
        with self._lock:
            hosts, self._idle = list(self._all), []
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
