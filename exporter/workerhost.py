"""A long-lived child that forks one process per worker request: ``python -m exporter.workerhost``.

Every converter request used to start ``python -m exporter.convert.worker``, which imports TensorFlow
again (about 4.6 s of CPU and 700 MB) for each conversion of an export. This host imports TensorFlow
once, early, while the parent does its own work, and then forks a child for every request: the child
starts with TensorFlow already imported (its pages shared copy-on-write), runs the module's
``main([request])``, writes its result file exactly as a one-shot process would, and exits. So requests
run side by side in separate processes without a second import (on 2 cores tf2onnx runs beside the int8
conversion instead of after it), and a native crash ends only its own child: the host survives and
reports the signal.

Forking is safe here because the host itself never runs TensorFlow: it only imports it (two idle native
threads exist then, waiting on futexes, holding no lock) and pre-imports the worker modules, which are
plain Python at import time. All graph building, sessions and thread pools start in the children.

Protocol: one JSON line per request on stdin ``{"id", "module", "request", "log"}``; on its protocol pipe
the host answers ``{"ready": true}`` once, then ``{"id", "pid"}`` when a request's child starts and
``{"id", "status"}`` when it ends (the exit code, or minus the signal number). The child's output goes to
the request's log file, never to the protocol. End of stdin kills any child still running and ends the
host; the children also die with the host (PR_SET_PDEATHSIG on Linux). Off Linux the host does not fork
(:data:`FORKS`): it runs each request itself, one at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import traceback
from typing import Any, TextIO

#: Modules this host may run (a request naming anything else is refused).
ALLOWED = ("exporter.convert.worker", "exporter.convert.onnx_worker", "exporter.analyze.litert_child")
#: How often finished children are reaped while the host waits for requests.
POLL_S = 0.02
#: Fork per request only where that is known to be safe after TensorFlow's import: Linux. On macOS the
#: Objective-C runtime aborts a child forked from a process that has started threads, so there (or with
#: EDGEPORT_WORKER_FORK=0) the host runs requests itself, one at a time, as before forking; a crash then
#: ends the host and the parent starts another for the next request.
FORKS = os.environ.get("EDGEPORT_WORKER_FORK", "1" if sys.platform.startswith("linux") else "0") == "1"


def serve() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # TensorFlow's stdout goes to the host log, never to the protocol
    sys.stdout = sys.stderr
    from .tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    for module in ALLOWED:
        importlib.import_module(module)
    protocol.write(json.dumps({"ready": True}) + "\n")
    running: dict[int, Any] = {}  # pid -> request id
    pending = b""
    stdin = sys.stdin.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_READ)
        while True:
            if selector.select(timeout=POLL_S):
                chunk = os.read(stdin, 65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        _start(json.loads(line), running, protocol)
            _reap(running, protocol, block=False)
    for pid in running:  # the parent is gone or done: nothing may outlive the export
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(running, protocol, block=True)
    return 0


def _start(job: dict[str, Any], running: dict[int, Any], protocol: TextIO) -> None:
    module = job.get("module")
    if module not in ALLOWED:
        protocol.write(json.dumps({"id": job.get("id"), "status": 2, "error": f"unknown module {module}"}) + "\n")
        return
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stderr.flush()
    if not FORKS:
        protocol.write(json.dumps({"id": job.get("id"), "pid": os.getpid()}) + "\n")
        status = _inline(job, log)
        protocol.write(json.dumps({"id": job.get("id"), "status": status}) + "\n")
        return
    pid = os.fork()
    if pid == 0:  # the request's child: never returns
        _child(job, log, protocol)
    os.close(log)
    running[pid] = job.get("id")
    protocol.write(json.dumps({"id": job.get("id"), "pid": pid}) + "\n")


def _child(job: dict[str, Any], log: int, protocol: TextIO) -> None:
    status = 1
    try:
        _die_with_parent()
        os.close(protocol.fileno())
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        print(f"--- edgeport worker: {job['module']} {job['request']}", file=sys.stderr, flush=True)
        status = int(importlib.import_module(job["module"]).main([job["request"]]) or 0)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(status)


def _inline(job: dict[str, Any], log: int) -> int:
    """Run the request in the host itself, its output to its log (the platforms that do not fork)."""
    saved = os.dup(2)
    os.dup2(log, 2)
    os.close(log)
    try:
        print(f"--- edgeport worker: {job['module']} {job['request']}", file=sys.stderr, flush=True)
        return int(importlib.import_module(job["module"]).main([job["request"]]) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _die_with_parent() -> None:
    """A child orphaned by a killed host is killed too (Linux); elsewhere the parent kills the pids it was told."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the host died before prctl took effect
        os._exit(1)


def _reap(running: dict[int, Any], protocol: TextIO, *, block: bool) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            running.clear()
            return
        if pid == 0:
            return
        request = running.pop(pid, None)
        with contextlib.suppress(BrokenPipeError, OSError):
            protocol.write(json.dumps({"id": request, "status": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    sys.exit(serve())
