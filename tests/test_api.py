"""The package's lazily exposed names (``exporter.verify``, ``exporter.benchmark``, ...) work in any import order.

``exporter/verify/`` and ``exporter/benchmark/`` are subpackages named like the functions ``exporter.verify``
and ``exporter.benchmark``; importing any of their submodules used to replace the function with the module
(``TypeError: 'module' object is not callable``). Each check runs in a fresh interpreter so the import order
is the one stated, not whatever earlier tests left in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import importlib, inspect, json, pkgutil, sys
import exporter

def import_every_submodule():
    names = [m.name for m in pkgutil.walk_packages(exporter.__path__, "exporter.") if m.name != "exporter.__main__"]
    for name in names:
        importlib.import_module(name)
    return names

def check_every_lazy_name():
    kinds = {}
    for name, (module, attr) in exporter._LAZY.items():
        value = getattr(exporter, name)
        defining = getattr(importlib.import_module(module), attr)
        if value is defining:
            kinds[name] = "same object"
        else:
            # A subpackage named like its function: the module itself, callable with the function's signature.
            assert value is sys.modules[module], (name, value)
            assert callable(value), name
            assert inspect.signature(value) == inspect.signature(defining), name
            assert value.__call__.__func__ is type(value).__call__, name
            kinds[name] = "callable module"
    return kinds
"""


def _run(tmp_path: Path, body: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(_PRELUDE + textwrap.dedent(body), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_lazy_name_works_after_every_submodule_was_imported(tmp_path):
    result = _run(
        tmp_path,
        """
        import numpy as np
        submodules = import_every_submodule()
        kinds = check_every_lazy_name()

        # Real calls through the package attributes, the subpackage-named functions included.
        from exporter.tfimport import import_tensorflow_quietly
        import_tensorflow_quietly()
        import keras
        import tensorflow as tf
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 1), batch_size=1, name="image"), keras.layers.Conv2D(2, 3, name="conv"),
                                  keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
        model.save("m.keras")
        np.savez("calib.npz", x=np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32))
        open("m.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())

        source = exporter.load_model("m.keras")
        calib = exporter.load_calibration("calib.npz:x", source.inputs, samples=4)
        profile = exporter.load_profile("android-arm64")
        graph = exporter.TFLiteGraph.from_file("m.tflite")
        check = exporter.verify(graph, profile)
        memory = exporter.estimate_memory(graph)
        edgetpu = exporter.analyze_edgetpu(graph)
        bench = exporter.benchmark("m.tflite", "android-arm64", runs=2, warmup=1)
        arena = exporter.measure_arena("m.tflite")
        options = exporter.ExportOptions(calib="calib.npz:x")
        error = exporter.EdgeportError("x", hint="y")
        print(json.dumps({
            "submodules": len(submodules),
            "kinds": kinds,
            "targets": exporter.available_targets(),
            "profile": [profile.name, isinstance(profile, exporter.TargetProfile)],
            "inputs": [list(t.shape) for t in source.inputs],
            "calib_samples": [len(a) for a in calib.arrays],
            "ops": sorted(check.op_counts),
            "fully_integer": check.fully_integer,
            "memory_type": type(memory).__name__,
            "edgetpu_type": type(edgetpu).__name__,
            "bench_type": type(bench).__name__,
            "arena_bytes": arena.bytes,
            "options_calib": options.calib,
            "exit_code": error.exit_code,
            "callables_ok": all(callable(getattr(exporter, n)) for n in ("export", "bench_on_device", "export_onnx")),
        }))
        """,
    )
    assert result["submodules"] >= 100
    assert result["kinds"]["verify"] == result["kinds"]["benchmark"] == "callable module"
    assert {k for k, v in result["kinds"].items() if v == "same object"} == set(result["kinds"]) - {
        "verify",
        "benchmark",
    }
    assert "cortex-m4" in result["targets"] and "android-arm64" in result["targets"]
    assert result["profile"] == ["android-arm64", True]
    assert result["inputs"][0][1:] == [8, 8, 1]
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(result["ops"]), result["ops"]
    assert result["fully_integer"] is False  # a float model, correctly seen as such
    assert (result["memory_type"], result["edgetpu_type"], result["bench_type"]) == (
        "MemoryEstimate",
        "EdgeTpuAnalysis",
        "BenchmarkResult",
    )
    assert result["calib_samples"] == [4]
    assert result["arena_bytes"] > 0
    assert result["options_calib"] == "calib.npz:x" and result["exit_code"] >= 1 and result["callables_ok"]


def test_lazy_names_accessed_first_stay_the_same_after_every_submodule_is_imported(tmp_path):
    result = _run(
        tmp_path,
        """
        before = {name: getattr(exporter, name) for name in exporter._LAZY}
        import_every_submodule()
        kinds = check_every_lazy_name()
        changed = [name for name in exporter._LAZY if getattr(exporter, name) is not before[name]]
        from exporter import verify, benchmark
        print(json.dumps({"changed": changed, "kinds": kinds,
                          "from_import": [verify is exporter.verify, benchmark is exporter.benchmark]}))
        """,
    )
    assert result["changed"] == []
    assert result["kinds"]["verify"] == "callable module"
    assert result["from_import"] == [True, True]


@pytest.mark.parametrize("name", ["verify", "benchmark"])
def test_callable_subpackage_keeps_its_submodules(name):
    """``exporter.verify.graph`` / ``exporter.benchmark.api`` still resolve through the callable module."""
    import exporter

    module = getattr(exporter, name)
    assert callable(module)
    assert module.__name__ == f"exporter.{name}"
    assert getattr(module, name).__module__.startswith(f"exporter.{name}")
