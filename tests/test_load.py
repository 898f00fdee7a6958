"""The load stage on real files: tiny Keras models built here, the MLPerf Tiny assets, a real legacy SavedModel."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import InputModelError
from exporter.load import load_model, signature_inputs
from exporter.load.model import TensorSpec

DATA = Path(__file__).parent / "data"
LEGACY_SAVED_MODEL = DATA / "legacy_saved_model"
VWW = "models/mlperf_tiny/visual_wake_words"
AD = "models/mlperf_tiny/anomaly_detection"
STR_WW = "models/mlperf_tiny/streaming_wakeword"


def load_error(path: Path | str, match: str, **kwargs) -> str:
    """The message of the InputModelError load_model raises; every one must be a single line."""
    with pytest.raises(InputModelError, match=match) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert info.value.exit_code == 2
    return message


# --- tiny models, built once per session ------------------------------------------------------------


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def small_keras(models_dir: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    path = models_dir / "small.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="session")
def lambda_keras(models_dir: Path) -> Path:
    import keras

    inputs = keras.Input((4,), name="x")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double_it")(inputs)
    outputs = keras.layers.Dense(2, name="out")(x)
    path = models_dir / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="session")
def dynamic_keras(models_dir: Path) -> Path:
    import keras

    inputs = keras.Input((None, None, 3), name="img")
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    path = models_dir / "dynamic.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="session")
def two_input_keras(models_dir: Path) -> Path:
    """Two inputs and a nested Sequential, whose layers must show up flattened."""
    import keras

    a = keras.Input((4,), name="a")
    b = keras.Input((6,), name="b")
    inner = keras.Sequential([keras.Input((10,)), keras.layers.Dense(5, name="inner_dense")], name="inner")
    x = inner(keras.layers.Concatenate(name="cat")([a, b]))
    outputs = keras.layers.Dense(2, name="head")(x)
    path = models_dir / "two_inputs.keras"
    keras.Model([a, b], outputs).save(path)
    return path


@pytest.fixture(scope="session")
def exported_saved_model(models_dir: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,), name="features"), keras.layers.Dense(3, name="logits")])
    path = models_dir / "exported_sm"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


# --- bad paths and bad files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.keras", match="does not exist")
    assert "does not exist" in message and "nope.keras" in message


def test_directory_that_is_not_a_saved_model(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    load_error(tmp_path, match=re.escape("is a directory but not a SavedModel"))


def test_unknown_suffix_lists_accepted_formats(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    message = load_error(path, match="Unsupported model file")
    for fmt in (".keras", ".h5", "SavedModel", ".tflite"):
        assert fmt in message


def test_corrupt_keras_archive(tmp_path: Path) -> None:
    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip archive at all")
    load_error(path, match=re.escape("not a valid .keras archive"))


def test_keras_zip_without_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no model here")
    load_error(path, match="a zip without config.json")


def test_text_file_named_h5(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_text("just some text\n")
    load_error(path, match=re.escape("is not an HDF5 file"))


def test_weights_only_h5(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "only.weights.h5"
    model.save_weights(path)
    message = load_error(path, match="holds only weights")
    assert "holds only weights" in message and "model.save" in message


def test_not_a_tflite_file(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"PK\x03\x04 definitely not a flatbuffer")
    load_error(path, match=re.escape("is not a TFLite model"))


# --- .keras -------------------------------------------------------------------------------------------


def test_keras_archive_loads(small_keras: Path) -> None:
    digest = hashlib.sha256(small_keras.read_bytes()).hexdigest()
    source = load_model(small_keras)
    assert source.format == "keras"
    assert source.loader == "keras.saving.load_model(safe_mode=True)"
    assert source.inputs == [TensorSpec("image", (1, 8, 8, 1), "float32")]
    assert source.outputs == [TensorSpec("probs", (1, 3), "float32")]
    assert list(source.layers.items()) == [
        ("image", "InputLayer"),
        ("conv", "Conv2D"),
        ("pool", "GlobalAveragePooling2D"),
        ("probs", "Dense"),
    ]
    assert source.keras_model is not None and source.saved_model_dir is None and source.tflite_bytes is None
    assert source.notes == []
    assert hashlib.sha256(small_keras.read_bytes()).hexdigest() == digest  # input left untouched


def test_lambda_refused_in_safe_mode_then_loads_unsafe(lambda_keras: Path) -> None:
    message = load_error(lambda_keras, match="Lambda layer 'double_it'")
    assert "'double_it'" in message and "Lambda" in message and "--unsafe" in message

    source = load_model(lambda_keras, unsafe=True)
    assert source.loader == "keras.saving.load_model(safe_mode=False)"
    assert any("--unsafe" in note and "code" in note for note in source.notes)
    assert source.layers["double_it"] == "Lambda"
    out = source.keras_model(np.ones((1, 4), np.float32))
    assert out.shape == (1, 2)


def test_dynamic_input_needs_input_shape(dynamic_keras: Path) -> None:
    message = load_error(dynamic_keras, match="dynamic shape")
    assert "Model input 'img' has a dynamic shape (None, None, None, 3)" in message
    assert "--input-shape 1,H,W,C" in message and "1,96,96,3" in message

    source = load_model(dynamic_keras, input_shape=(1, 32, 24, 3))
    assert source.inputs == [TensorSpec("img", (1, 32, 24, 3), "float32")]
    assert source.outputs[0].shape == (1, 2)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 32, 32, 3), "batch 1"),
        ((1, 32, 32), "rank 3"),
        ((1, 32, 32, 4), "does not match"),
        ((1, 0, 32, 3), "positive"),
    ],
)
def test_bad_input_shape(dynamic_keras: Path, shape: tuple[int, ...], expected: str) -> None:
    load_error(dynamic_keras, match=re.escape(expected), input_shape=shape)


def test_multi_input_model(two_input_keras: Path) -> None:
    source = load_model(two_input_keras)
    assert [(s.name, s.shape) for s in source.inputs] == [("a", (1, 4)), ("b", (1, 6))]
    assert source.outputs == [TensorSpec("head", (1, 2), "float32")]
    # Nested model's layers are flattened, right after the nested model itself.
    names = list(source.layers)
    assert names.index("inner") < names.index("inner_dense") < names.index("head")
    assert source.layers["inner"] == "Sequential"

    load_error(two_input_keras, match=re.escape("single-input models only"), input_shape=(1, 4))


# --- legacy Keras 2 H5 (real MLPerf Tiny files) -------------------------------------------------------


def test_vww_h5_loads_via_compat_and_matches_reference(assets: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    source = load_model(assets / VWW / "vww_96.h5")
    assert source.format == "h5"
    assert source.loader == "keras (legacy H5, compat: dropped DepthwiseConv2D.groups)"
    assert any("DepthwiseConv2D.groups=1" in note for note in source.notes)
    assert source.inputs == [TensorSpec("input_1", (1, 96, 96, 3), "float32")]
    assert source.outputs[0].shape == (1, 2)
    assert source.layers["depthwise_conv2d"] == "DepthwiseConv2D"

    # The weights really loaded: same outputs as the upstream float TFLite export of the same file.
    batch = np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32)
    import keras

    [keras_out] = [np.asarray(t) for t in keras.tree.flatten(source.keras_model([batch], training=False))]
    interpreter = Interpreter(model_path=str(assets / VWW / "vww_96_float.tflite"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert keras_out.shape == reference.shape == (1, 2)
    assert np.max(np.abs(keras_out - reference)) < 1e-4
    assert not np.allclose(reference, reference[0, ::-1])  # a non-trivial prediction was compared


def test_ad01_h5_loads_with_input_shape(assets: Path) -> None:
    source = load_model(assets / AD / "ad01.h5", input_shape=(1, 640))
    assert source.loader == "keras (legacy H5)"
    assert source.inputs == [TensorSpec("input_1", (1, 640), "float32")]
    assert source.outputs[0].shape == (1, 640)
    assert list(source.layers.values()).count("Dense") == 10


def test_streaming_wakeword_h5_loads(assets: Path) -> None:
    source = load_model(assets / STR_WW / "str_ww_ref_model.h5")
    assert "compat: dropped DepthwiseConv2D.groups" in source.loader
    assert source.inputs == [TensorSpec("input_1", (1, 30, 1, 40), "float32")]
    assert source.outputs[0].shape == (1, 3)


# --- SavedModel ---------------------------------------------------------------------------------------


def test_exported_saved_model_loads(exported_saved_model: Path) -> None:
    source = load_model(exported_saved_model)
    assert source.format == "saved_model"
    assert source.loader == "tf.saved_model.load"
    assert source.keras_model is None and source.saved_model_dir == exported_saved_model
    [spec] = source.inputs
    assert (spec.shape, spec.dtype) == ((1, 5), "float32")
    assert spec.tensor_name and spec.tensor_name.startswith("serving_default_")
    assert [o.shape for o in source.outputs] == [(1, 3)]
    assert source.layers == {}


def test_legacy_saved_model_falls_back_to_compat_v1() -> None:
    """A real tf_keras SavedModel with legacy-optimizer slots (scripts/make_legacy_saved_model.py)."""
    source = load_model(LEGACY_SAVED_MODEL)
    assert source.loader == "compat.v1"
    assert source.saved_model_dir == LEGACY_SAVED_MODEL
    assert source.inputs == [TensorSpec("input_1", (1, 8), "float32", tensor_name="serving_default_input_1")]
    assert [o.shape for o in source.outputs] == [(1, 2)]
    assert any("add_slot" in note for note in source.notes)
    assert signature_inputs(LEGACY_SAVED_MODEL) == [
        TensorSpec("input_1", (-1, 8), "float32", tensor_name="serving_default_input_1")
    ]


def test_legacy_saved_model_converts_with_compat_v1() -> None:
    """What loader="compat.v1" promises the converter: tensor_name-keyed shapes convert and compute the same."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    source = load_model(LEGACY_SAVED_MODEL)
    converter = tf.compat.v1.lite.TFLiteConverter.from_saved_model(
        str(source.saved_model_dir), input_shapes={s.tensor_name: list(s.shape) for s in source.inputs}
    )
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    probe = np.linspace(0.0, 1.0, 8, dtype=np.float32).reshape(1, 8)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], probe)
    interpreter.invoke()
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = np.load(DATA / "legacy_saved_model_probe_output.npy")
    np.testing.assert_allclose(result, expected, atol=1e-5)


# --- .tflite ------------------------------------------------------------------------------------------


def test_tflite_vww_int8(assets: Path) -> None:
    path = assets / VWW / "vww_96_int8.tflite"
    source = load_model(path)
    assert source.format == "tflite" and source.is_tflite
    assert source.tflite_bytes == path.read_bytes()
    [spec] = source.inputs
    assert (spec.dtype, spec.shape) == ("int8", (1, 96, 96, 3))
    assert [(o.dtype, o.shape) for o in source.outputs] == [("int8", (1, 2))]
    assert any("shape_signature" in note for note in source.notes)


def test_tflite_shapes_are_fixed(assets: Path) -> None:
    load_error(assets / VWW / "vww_96_int8.tflite", match=re.escape("does not match"), input_shape=(1, 64, 64, 3))


def test_truncated_tflite(assets: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.tflite"
    path.write_bytes((assets / VWW / "vww_96_int8.tflite").read_bytes()[:2000])
    load_error(path, match="corrupt TFLite flatbuffer.*copy it again")
