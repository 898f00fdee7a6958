"""A long-lived child that runs worker requests one after another: ``python -m exporter.workerhost``.

Every converter request used to start ``python -m exporter.convert.worker``, which imports TensorFlow
again (about 4.6 s of CPU and 700 MB) for each conversion of an export. This host imports TensorFlow
once, early, while the parent does its own work, and then serves every request of the export: one line
on stdin names the worker module and its request file; the module's ``main([request])`` writes the
result file exactly as it would as a one-shot process; the host answers with one line on its protocol
pipe. Native crashes still take down only this child (the parent starts a new one for the next
request), and everything the module prints goes to the log, never to the protocol.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

#: Modules this host may run (a request naming anything else is refused).
ALLOWED = ("exporter.convert.worker", "exporter.convert.onnx_worker")


def serve() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the workers' and TensorFlow's stdout go to the log
    sys.stdout = sys.stderr
    preload = os.environ.get("EDGEPORT_WORKER_PRELOAD")
    if preload:
        from .tfimport import import_tensorflow_quietly

        import_tensorflow_quietly()
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        module = job["module"]
        if module not in ALLOWED:
            protocol.write(json.dumps({"id": job.get("id"), "status": 2, "error": f"unknown module {module}"}) + "\n")
            continue
        print(f"--- edgeport worker: {module} {job['request']}", file=sys.stderr, flush=True)
        status = int(importlib.import_module(module).main([job["request"]]) or 0)
        sys.stderr.flush()
        protocol.write(json.dumps({"id": job.get("id"), "status": status}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve())
