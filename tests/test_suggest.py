"""edgeport suggest: advice grounded in a real export's findings, fit checks and layer sizes."""

from __future__ import annotations

import json

import pytest
from cli_helpers import quiet_keras, run_cli

from exporter.suggest import suggest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    keras = quiet_keras()
    keras.utils.set_random_seed(4)
    folder = tmp_path_factory.mktemp("suggest")
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.Activation("gelu", name="mid_gelu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3, name="head")(x)).save(folder / "gelu.keras")
    big = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(512, activation="relu", name="big_fc"),
            keras.layers.Dense(10, name="out"),
        ]
    )
    big.save(folder / "big.keras")
    (folder / "tiny-board.toml").write_text(
        'inherit = "cortex-m4"\nname = "tiny-board"\ntitle = "t"\ndescription = "8 KiB of flash"\n[memory]\nflash_budget_bytes = 8192\n'
    )
    return folder


def test_gelu_on_edgetpu_names_the_layer_and_relu6(models):
    [result] = suggest(models / "gelu.keras", "edgetpu")
    assert result.verdict == "blocked"
    relevant = [s for s in result.items if s.where == "mid_gelu"]
    assert relevant and any("ReLU6" in s.what or "ReLU" in s.what for s in relevant)
    assert "synthetic" in result.evidence


def test_flash_overflow_suggests_a_width_multiplier_and_the_dominant_layer(models, capsys):
    run = run_cli(capsys, "suggest", models / "big.keras", "--target", models / "tiny-board.toml", "--json")
    assert run.code == 0, run.err
    [result] = json.loads(run.out)
    kinds = {s["kind"]: s for s in result["suggestions"]}
    assert "width multiplier of 0.25" in kinds["flash"]["what"] or "width multiplier of 0.35" in kinds["flash"]["what"]
    assert kinds["size"]["where"] == "big_fc" and "lowrank" in kinds["size"]["what"]


def test_a_model_that_fits_gets_no_changes(models, tiny_keras_path):
    [result] = suggest(tiny_keras_path, "cortex-m4")
    assert result.verdict == "fits and runs"
    assert not [s for s in result.items if s.kind in ("op", "float", "flash", "ram", "edgetpu")]
