"""One measured job of benchmarks/speed.py, run as a fresh process: ``python _speed_child.py '<json job>'``.

Jobs:

- ``tf_import``: ``import tensorflow`` and nothing else (the cost of one TensorFlow import);
- ``hand``: the conversion a user writes by hand: ``keras`` load, ``tf.lite.TFLiteConverter`` full int8
  (``Optimize.DEFAULT``, a representative dataset of the very samples edgeport calibrates with, int8
  input and output, ``TFLITE_BUILTINS_INT8`` only), the bytes written to a file;
- ``export``: ``exporter.export(model, target=..., calib=..., output_dir=...)``;
- ``prepare`` (not timed): builds the models and calibration files the other jobs read.

A timed job imports TensorFlow first and times that apart (phase ``import``), then times the rest
(phase ``work``): wall from ``time.perf_counter`` and CPU as user+sys of this process plus the children
it waited for. It prints ``SPEED_RESULT {json}`` last; the parent measures the whole tree around it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESULT_PREFIX = "SPEED_RESULT "


def cpu_now() -> float:
    """CPU seconds (user+sys) of this process and of every child it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def live_children() -> int:
    """Processes whose parent is this one (a converter worker still running after the work, say)."""
    me, count = str(os.getpid()), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                    count += handle.read().rsplit(")", 1)[1].split()[1] == me
            except (OSError, IndexError):
                continue
    return count


def timed(phase: dict[str, float], fn: Any, *args: Any) -> Any:
    t0, c0 = time.perf_counter(), cpu_now()
    value = fn(*args)
    phase["wall_s"], phase["cpu_s"] = time.perf_counter() - t0, cpu_now() - c0
    return value


# --- the hand conversion ------------------------------------------------------------------------------


def load_keras(path: str) -> Any:
    """The model, as a user loads it; a Keras 2 .h5 whose DepthwiseConv2D carries ``groups`` (VWW) needs the
    usual one-line fix, since Keras 3 refuses that key."""
    import keras

    if path.endswith(".h5"):

        class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
            def __init__(self, *args: Any, groups: int | None = None, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)

        return keras.models.load_model(path, compile=False, custom_objects={"DepthwiseConv2D": DepthwiseConv2D})
    return keras.saving.load_model(path, compile=False)


def hand_convert(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    model = load_keras(job["model"])
    samples = np.load(job["calib_npy"])

    def representative() -> Any:
        for sample in samples:
            yield [sample[None].astype(np.float32)]

    if job.get("hand") == "saved_model":  # the static-batch route edgeport takes (see ../shared/STACK.md)
        saved = Path(job["out"]).with_suffix(".saved_model")
        spec = tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32)
        model.export(str(saved), format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    blob = converter.convert()
    Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(job["out"]).write_bytes(blob)
    return {"bytes": len(blob), "samples": int(len(samples))}


# --- the export -----------------------------------------------------------------------------------------


def export(job: dict[str, Any]) -> dict[str, Any]:
    import exporter

    result = exporter.export(job["model"], target=job["target"], calib=job["calib"], output_dir=job["out"],
                             **job.get("options", {}))  # fmt: skip
    return {"verdicts": {r.target: r.verdict for r in result.reports}, "exit_code": result.exit_code}


def exporter_from() -> str | None:
    """Where ``exporter`` was imported from (speed.py checks it is the code it means to measure)."""
    module = sys.modules.get("exporter")
    return str(Path(module.__file__).resolve().parent) if module and module.__file__ else None


def import_tensorflow(job: dict[str, Any]) -> None:
    """The same plain import for every job (edgeport's own quiet import only silences banners)."""
    if job["kind"] == "export":
        import exporter  # noqa: F401  (``import exporter`` itself is light: attributes load on use)
    import keras  # noqa: F401
    import tensorflow  # noqa: F401


# --- preparing inputs (untimed) ----------------------------------------------------------------------------


def prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Write AD's windows, build MobileNetV2, and save the exact samples edgeport calibrates each model with."""
    import numpy as np

    from exporter.calibrate import load_calibration
    from exporter.load import load_model
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    done: dict[str, Any] = {}
    for name, spec in job["models"].items():
        if spec.get("build") == "ad_windows":
            frames = np.fromfile(spec["source"], dtype=np.float32).reshape(200, 128)
            np.save(spec["calib"], np.stack([frames[t : t + 5].reshape(640) for t in range(196)]))
        elif spec.get("build") == "mobilenetv2":
            if not Path(spec["model"]).is_file():
                sys.path.insert(0, job["scripts"])
                from zoo_models import make_realistic

                keras.utils.set_random_seed(0)
                model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
                rng = np.random.default_rng(0)
                make_realistic(model, {"image": rng.uniform(-1, 1, (64, 96, 96, 3)).astype("float32")}, keras)
                model.save(spec["model"])
                np.save(spec["calib"], rng.uniform(-1, 1, (200, 96, 96, 3)).astype("float32"))
        source = load_model(Path(spec["model"]))
        calib = load_calibration(spec["calib"], source.inputs, samples=200, seed=0, **spec.get("options", {}))
        np.save(spec["calib_npy"], calib.arrays[0])
        done[name] = {"samples": int(calib.arrays[0].shape[0]), "params": int(source.keras_model.count_params())}
    return done


def main() -> int:
    job = json.loads(sys.argv[1])
    out: dict[str, Any] = {"kind": job["kind"]}
    if job["kind"] == "prepare":
        out["prepared"] = prepare(job)
        out["exporter_from"] = exporter_from()
    else:
        out["import"] = {}
        timed(out["import"], import_tensorflow, job)
        out["maxrss_after_import_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if job["kind"] != "tf_import":
            out["work"] = {}
            work = hand_convert if job["kind"] == "hand" else export
            out["result"] = timed(out["work"], work, job)
            out["children_left"] = live_children()
            out["exporter_from"] = exporter_from()
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
