"""Multi-input and multi-output Keras models: every target, every output, data keyed by input name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cli_helpers import files_under, quiet_keras, run_cli

pytestmark = pytest.mark.slow

TFLITE_TARGETS = ("android-arm64", "cortex-m4", "cortex-m55-ethos-u55", "cortex-m7", "edgetpu")


def _data(count: int, seed: int) -> dict[str, np.ndarray]:
    """Images whose mean brightness and meta vectors decide the class: a task a tiny model learns in seconds."""
    rng = np.random.default_rng(seed)
    image = rng.random((count, 16, 16, 3), dtype=np.float32)
    meta = rng.random((count, 8), dtype=np.float32)
    score = meta[:, 0] + 0.5 * meta[:, 1]
    y = np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75])).astype(np.int64)
    box = np.stack([image[..., 0].mean(axis=(1, 2)), meta[:, 1]], axis=1).astype(np.float32)
    return {"image": image, "meta": meta, "y": y, "box": box}


@pytest.fixture(scope="module")
def mimo(tmp_path_factory):
    """A dict-input ("image", "meta"), dict-output ("cls" softmax, "box" regression) model, trained briefly."""
    keras = quiet_keras()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    m = layers.Dense(8, activation="relu", name="meta_dense")(meta)
    h = layers.Concatenate(name="join")([x, m])
    cls = layers.Dense(4, activation="softmax", name="cls")(h)
    box = layers.Dense(2, name="box")(h)
    model = keras.Model({"image": image, "meta": meta}, {"cls": cls, "box": box}, name="mimo")
    model.compile(keras.optimizers.Adam(0.01), {"cls": "sparse_categorical_crossentropy", "box": "mse"})
    train = _data(512, 0)
    model.fit(
        {"image": train["image"], "meta": train["meta"]},
        {"cls": train["y"], "box": train["box"]},
        epochs=12,
        batch_size=32,
        verbose=0,
    )
    root = tmp_path_factory.mktemp("mimo")
    model.save(root / "mimo.keras")
    calib, evaluation = _data(64, 1), _data(96, 2)
    np.savez(root / "calib.npz", image=calib["image"], meta=calib["meta"])
    np.savez(root / "eval.npz", image=evaluation["image"], meta=evaluation["meta"], y=evaluation["y"])
    return root


def test_two_inputs_two_outputs_export_to_every_target(mimo, tmp_path, capsys):
    out = tmp_path / "out"
    run = run_cli(
        capsys,
        "export",
        mimo / "mimo.keras",
        "--target",
        "all,onnx",
        "--calib",
        mimo / "calib.npz",
        "--eval",
        mimo / "eval.npz",
        "-o",
        out,
        "--quiet",
    )
    assert run.code == 0, run.err
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.compact import expand_zero_points, tflm_only

    for target in TFLITE_TARGETS:
        report = json.loads((out / target / "report.json").read_text())
        assert report["verdict"] == "ok", (target, report["reasons"])
        outputs = {o["name"]: o for o in report["fidelity"]["outputs"]}
        assert set(outputs) == {"cls", "box"}, target  # fidelity covers every output
        assert all(o["snr_db"] is None or o["snr_db"] > 15 for o in outputs.values()), outputs
        # The labels score the classifier, not the box regressor that sorts first.
        assert outputs["cls"]["float_accuracy"] > 0.5 and outputs["box"]["float_accuracy"] is None
        assert abs(outputs["cls"]["accuracy_drop_pp"]) <= 5
        # The written model lists its tensors in the Keras order: image then meta, box then cls.
        written = (out / target / "model_int8.tflite").read_bytes()
        # TFLite Micro targets store per-channel zero points once (LiteRT refuses that layout; same model)
        assert (tflm_only(written) is not None) == (target in ("cortex-m4", "cortex-m7")), target
        interp = Interpreter(model_content=expand_zero_points(written))
        assert [tuple(d["shape"]) for d in interp.get_input_details()] == [(1, 16, 16, 3), (1, 8)]
        assert [tuple(d["shape"]) for d in interp.get_output_details()] == [(1, 2), (1, 4)]
    settings = (out / "cortex-m4" / "model_settings.h").read_text()
    assert "#define MODEL_INPUT_COUNT 2" in settings and "#define MODEL_OUTPUT_COUNT 2" in settings
    onnx = json.loads((out / "onnx" / "report.json").read_text())
    assert onnx["verdict"] == "ok"


def test_int8_outputs_follow_keras_outputs_position_by_position(tmp_path):
    """A list model whose converter order is reversed (inputs (b, a), outputs (wide, narrow))."""
    keras = quiet_keras()
    import exporter
    from exporter.analyze.inference import run_tflite

    keras.utils.set_random_seed(5)
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = keras.layers.Concatenate()([a, keras.layers.Dense(4, activation="relu")(b)])
    narrow = keras.layers.Dense(2, name="z_narrow")(h)
    wide = keras.layers.Dense(3, name="a_wide")(h)
    model = keras.Model([b, a], [narrow, wide])
    path = tmp_path / "lists.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    xb, xa = rng.random((80, 3), dtype=np.float32), rng.random((80, 4), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", b=xb, a=xa)
    result = exporter.export(
        path, target="android-arm64", calib=str(tmp_path / "calib.npz"), output_dir=tmp_path / "o", formats=("tflite",)
    )
    assert result.exit_code == 0
    blob = (tmp_path / "o" / "model_int8.tflite").read_bytes()
    got = run_tflite(blob, [xb[:20], xa[:20]])
    want = model.predict([xb[:20], xa[:20]], verbose=0)
    assert [g.shape for g in got] == [(20, 2), (20, 3)]
    for g, w in zip(got, want, strict=True):
        scale = np.abs(w).max()
        assert np.abs(g - w).max() < 0.05 * scale  # a swapped input would be far off


def _export_m4(capsys, mimo, calib, out, *extra):
    return run_cli(
        capsys, "export", mimo / "mimo.keras", "-t", "cortex-m4", "--calib", calib, "-o", out, "--quiet", *extra
    )


def test_callable_yielding_dicts_with_labels_calibrates_and_evaluates(mimo, tmp_path, capsys):
    source = tmp_path / "feed.py"
    source.write_text(
        "import numpy as np\n"
        f"DATA = np.load({str(mimo / 'eval.npz')!r})\n"
        "def samples():\n"
        "    for i in range(0, 96, 8):\n"
        "        yield {'meta': DATA['meta'][i:i+8], 'image': DATA['image'][i:i+8]}, DATA['y'][i:i+8]\n"
        "def pairs():\n"
        "    for i in range(40):\n"
        "        yield (DATA['image'][i], DATA['meta'][i])\n"
    )
    run = _export_m4(capsys, mimo, f"{source}:pairs", tmp_path / "o", "--eval", f"{source}:samples")
    assert run.code == 0, run.err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["calibration"]["samples"] == 40
    cls = next(o for o in report["fidelity"]["outputs"] if o["name"] == "cls")
    assert cls["samples"] == 96 and cls["float_accuracy"] is not None


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"image": (64, 16, 16, 3)}, r"none is named after the model input\(s\) \(image, meta\)"),
        ({"image": (64, 16, 16, 3), "meta": (64, 9)}, r"meta.*\(8,\)|\(8,\).*meta"),
        ({"image": (64, 16, 16, 3), "meta": (50, 8)}, r"same number of samples.*image: 64, meta: 50"),
    ],
)
def test_multi_input_data_is_validated_by_name_and_shape(mimo, tmp_path, capsys, arrays, expected):
    np.savez(tmp_path / "bad.npz", **{k: np.zeros(s, np.float32) for k, s in arrays.items()})
    run = _export_m4(capsys, mimo, tmp_path / "bad.npz", tmp_path)
    assert run.code == 2
    assert run.err.count("\n") == 1 and "Traceback" not in run.err
    assert re.search(expected, run.error_line), run.error_line
    assert files_under(tmp_path) == [tmp_path / "bad.npz"]


def test_string_data_for_one_input_is_refused_naming_it(mimo, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", image=np.zeros((8, 16, 16, 3), np.float32), meta=np.array([["a"] * 8] * 8))
    run = _export_m4(capsys, mimo, tmp_path / "bad.npz", tmp_path / "o")
    assert run.code == 2 and "meta" in run.error_line, run.err
