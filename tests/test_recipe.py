"""edgeport run: recipes validated before anything runs, run end to end, stopped by the guard with exit 3."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import quiet_keras, run_cli


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory, mnist_splits, mnist_cnn_path):
    folder = tmp_path_factory.mktemp("recipe")
    x, y = mnist_splits["train"]
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez(folder / "eval.npz", x=mnist_splits["eval"][0][:1500], y=mnist_splits["eval"][1][:1500])
    np.savez(folder / "calib.npz", x=mnist_splits["calib"][0])
    (folder / "model.keras").write_bytes(mnist_cnn_path.read_bytes())
    return folder


HEAD = """model = "model.keras"
seed = 0
[data]
train = "train.npz:x,y"
eval = "eval.npz:x,y"
calib = "calib.npz:x"
"""


def write(folder, name, body):
    """HEAD's [data] table goes after the body's top-level keys (TOML puts later bare keys in the last table)."""
    path = folder / name
    top, table, rest = body.partition("[")
    model, _, data = HEAD.partition("[data]")
    path.write_text(model + top + "[data]" + data + table + rest)
    return path


def test_prune_distill_int8_export_for_cortex_m4_end_to_end(recipe_dir, capsys):
    recipe = write(
        recipe_dir,
        "m4.toml",
        """output_dir = "m4_out"
[guard]
max_accuracy_drop = 5.0
[[step]]
kind = "prune"
sparsity = "50%"
epochs = 1
[[step]]
kind = "distill"
epochs = 1
temperature = 4.0
alpha = 0.1
[[step]]
kind = "export"
targets = ["cortex-m4"]
""",
    )
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 0, run.err
    out = recipe_dir / "m4_out"
    report = json.loads((out / "recipe_report.json").read_text())
    assert [s["kind"] for s in report["steps"]] == ["prune", "distill", "export"]
    assert report["stopped_at"] is None
    assert all(s["guard_ok"] and s["drop_pp"] <= 5.0 for s in report["steps"])
    assert (out / "01_prune" / "model.keras").is_file() and (out / "02_distill" / "model.keras").is_file()
    assert (out / "03_export" / "model_int8.tflite").is_file()
    export = report["steps"][2]["detail"]["cortex-m4"]
    assert export["verdict"] == "ok" and 0.8 < export["int8_accuracy"] <= 1.0
    # distillation held the pruned zeros: the exported model is still half zeros where pruning cut
    from exporter.load import load_model

    distilled = load_model(out / "02_distill" / "model.keras").keras_model
    kernel = distilled.get_layer("conv2").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    assert "guard broken" not in run.out and "03_export" in run.out


def test_qat_step_then_export_ships_the_trained_scheme(recipe_dir, capsys):
    """A qat step writes a QAT .keras; the export step converts it per-tensor as trained and checks it."""
    recipe = write(
        recipe_dir,
        "qat.toml",
        """output_dir = "qat_out"
[guard]
max_accuracy_drop = 2.0
[[step]]
kind = "qat"
epochs = 1
per_tensor = true
[[step]]
kind = "export"
targets = ["cortex-m4"]
""",
    )
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 0, run.err
    out = recipe_dir / "qat_out"
    report = json.loads((out / "recipe_report.json").read_text())
    assert [s["kind"] for s in report["steps"]] == ["qat", "export"] and report["stopped_at"] is None
    assert report["steps"][0]["detail"]["spec"]["per_tensor"] is True
    from exporter.verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_file(out / "02_export" / "model_int8.tflite")
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.name in ("CONV_2D", "FULLY_CONNECTED")]
    assert weights and all(len(t.scale) == 1 for t in weights)  # per-tensor, as the qat step trained
    exported = json.loads((out / "02_export" / "report.json").read_text())
    assert "QAT check" in exported["conversion"]["qat"]


def test_guard_stops_at_the_step_that_broke_it_exit_3_and_keeps_artifacts(recipe_dir, capsys):
    recipe = write(
        recipe_dir,
        "strict.toml",
        """output_dir = "strict_out"
[guard]
max_accuracy_drop = 10.0
[[step]]
kind = "prune"
sparsity = "20%"
epochs = 0
[[step]]
kind = "prune"
sparsity = "97%"
epochs = 0
[[step]]
kind = "export"
targets = "cortex-m4"
""",
    )
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 3, run.err
    assert "Guard broken at 02_prune" in run.error_line and "pp below the original" in run.error_line
    out = recipe_dir / "strict_out"
    report = json.loads((out / "recipe_report.json").read_text())
    assert report["stopped_at"] == "02_prune"
    first, second = report["steps"]
    assert first["guard_ok"] and not second["guard_ok"] and second["drop_pp"] > 10.0
    assert (out / "01_prune" / "model.keras").is_file() and (out / "02_prune" / "model.keras").is_file()
    assert not (out / "03_export").exists()


def test_export_step_a_target_cannot_run_is_recorded_and_stops_with_exit_3(recipe_dir, capsys):
    keras = quiet_keras()
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="features")(inputs)
    x = keras.layers.Activation("gelu", name="gelu_act")(x)  # no int8 GELU kernel in TFLite Micro
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(recipe_dir / "gelu.keras")
    recipe = recipe_dir / "gelu.toml"
    recipe.write_text(
        'model = "gelu.keras"\nseed = 0\noutput_dir = "gelu_out"\n[data]\neval = "eval.npz:x,y"\n'
        'calib = "calib.npz:x"\n[[step]]\nkind = "export"\ntargets = ["cortex-m4"]\n'
    )
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 3, run.err
    assert "Export step 01_export is not supported" in run.error_line and "gelu_act" in run.error_line
    report = json.loads((recipe_dir / "gelu_out" / "recipe_report.json").read_text())
    assert report["stopped_at"] == "01_export" and "not supported" in report["message"]
    (step,) = report["steps"]
    m4 = step["detail"]["cortex-m4"]
    assert m4["verdict"] == "not supported" and any("gelu_act" in reason for reason in m4["reasons"])
    assert not (recipe_dir / "gelu_out" / "01_export" / "model_int8.tflite").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[step]]\nkind = "quantise"\n', r"step\[1\]\.kind: unknown step 'quantise'"),
        ('[[step]]\nkind = "prune"\nsparsty = 0.5\n', r"step\[1\]\.sparsty: unknown option for a prune step"),
        ('[[step]]\nkind = "prune"\nsparsity = "150%"\n', r"step\[1\] \(prune\): --prune needs a fraction"),
        ('[[step]]\nkind = "cluster"\nclusters = "many"\n', r"step\[1\]\.clusters: must be int"),
        (
            '[[step]]\nkind = "distill"\nteacher = "nope.keras"\n',
            r"step\[1\] \(distill\): teacher file .*nope.keras does not exist",
        ),
        ('[[step]]\nkind = "export"\ntargets = ["cortex-m99"]\n', r"step\[1\] \(export\)"),
        ('[guard]\nmax_drop = 1\n[[step]]\nkind = "prune"\n', r"guard\.max_drop: unknown key"),
    ],
)
def test_invalid_recipe_is_one_line_exit_2_naming_the_key(recipe_dir, capsys, body, message):
    recipe = write(recipe_dir, "bad.toml", 'output_dir = "bad_out"\n' + body)
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 2, run.err
    assert len(run.err.strip().splitlines()) == 1
    import re

    assert re.search(message, run.error_line), run.error_line
    assert not (recipe_dir / "bad_out").exists()  # nothing ran


def test_missing_data_file_is_named(recipe_dir, capsys):
    path = recipe_dir / "missing.toml"
    path.write_text('model = "model.keras"\n[data]\ntrain = "absent.npz:x,y"\n[[step]]\nkind = "prune"\n')
    run = run_cli(capsys, "run", path)
    assert run.code == 2 and "data.train: file" in run.error_line and "absent.npz does not exist" in run.error_line


def test_shipped_example_recipes_validate(capsys):
    from pathlib import Path

    from exporter.recipe import STEP_OPTIONS

    examples = sorted((Path(__file__).resolve().parents[1] / "examples" / "recipes").glob("*.toml"))
    assert examples
    import tomllib

    for path in examples:
        raw = tomllib.loads(path.read_text())
        for step in raw["step"]:
            assert step["kind"] in STEP_OPTIONS
            assert set(step) - {"kind"} <= set(STEP_OPTIONS[step["kind"]]), path.name


def test_cluster_step_then_export_ships_lut_compressed_weights_to_cortex_m4(recipe_dir, capsys):
    """A recipe's cluster step makes a clustered Keras model: the export step's TFLite Micro file is
    LUT-compressed (DECODE), and its int8 accuracy is measured in TFLite Micro (LiteRT has no DECODE)."""
    recipe = write(
        recipe_dir,
        "cluster.toml",
        """output_dir = "cluster_out"
[guard]
max_accuracy_drop = 5.0
[[step]]
kind = "cluster"
clusters = 8
epochs = 1
[[step]]
kind = "export"
targets = ["cortex-m4"]
""",
    )
    run = run_cli(capsys, "run", recipe, "--quiet")
    assert run.code == 0, run.err
    out = recipe_dir / "cluster_out"
    report = json.loads((out / "recipe_report.json").read_text())
    export = report["steps"][1]["detail"]["cortex-m4"]
    assert export["verdict"] == "ok" and 0.8 < export["int8_accuracy"] <= 1.0
    assert "TFLite Micro, its flash layout" in export["accuracy_how"]
    target_report = json.loads((out / "02_export" / "report.json").read_text())
    assert target_report["lut_compression"]["shipped"] is True
    assert max(t["bits"] for t in target_report["lut_compression"]["compressed"]) <= 3
