"""exporter.verify: reading .tflite files and checking them against targets, on real and freshly
converted models (tiny Keras models converted with the real TFLite converter, a few seconds in all)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.errors import InputModelError
from exporter.profiles import load_profile
from exporter.verify import REGISTRY, TFLiteGraph, Verification, message_templates, verify
from exporter.verify.layers import keras3_scoped, layer_for_tensor

TARGETS = ("edgetpu", "cortex-m4", "android-arm64")
INTEGER_ONLY = ("edgetpu", "cortex-m4")


@pytest.fixture(scope="module")
def profiles() -> dict:
    return {name: load_profile(name) for name in TARGETS}


@pytest.fixture(scope="module")
def vww(assets: Path) -> dict[str, TFLiteGraph]:
    folder = assets / "models" / "mlperf_tiny" / "visual_wake_words"
    return {kind: TFLiteGraph.from_file(folder / f"vww_96_{kind}.tflite") for kind in ("int8", "float")}


def codes(result: Verification, severity: str | None = None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity == severity}


# --- tiny models converted with the real converter -----------------------------------------------------


@pytest.fixture(scope="module")
def convert(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TFLiteGraph]:
    """Keras model -> static-shape SavedModel -> TFLiteConverter, as edgeport's converter does."""
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    folder = tmp_path_factory.mktemp("tiny")

    def run(model, shape: tuple[int, ...], *, int8: bool = True, flex: bool = False, batch: int = 1) -> TFLiteGraph:
        saved = folder / f"{model.name}_{len(list(folder.iterdir()))}"
        spec = tf.TensorSpec((batch, *shape), tf.float32)
        model.export(str(saved), format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if int8:
            rng = np.random.default_rng(0)

            def representative():
                for _ in range(8):
                    yield [rng.random((batch, *shape), dtype=np.float32)]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if flex:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        return TFLiteGraph.from_bytes(converter.convert())

    return run


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def softmax_1000(convert, keras) -> TFLiteGraph:
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1000, activation="softmax")(x)
    return convert(keras.Model(inputs, outputs), (8, 8, 3))


@pytest.fixture(scope="module")
def layernorm(convert, keras) -> tuple[TFLiteGraph, dict[str, str]]:
    layers = keras.layers
    inputs = keras.Input((16,))
    x = layers.Dense(16, name="proj")(inputs)
    x = layers.LayerNormalization(name="ln")(x)
    outputs = layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    return convert(model, (16,)), {layer.name: type(layer).__name__ for layer in model.layers}


@pytest.fixture(scope="module")
def gelu(convert, keras) -> tuple[TFLiteGraph, dict[str, str]]:
    layers = keras.layers
    inputs = keras.Input((16,))
    x = layers.Dense(16, name="proj")(inputs)
    x = layers.Activation(lambda t: keras.activations.gelu(t, approximate=False), name="gelu_act")(x)
    outputs = layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    return convert(model, (16,)), {layer.name: type(layer).__name__ for layer in model.layers}


@pytest.fixture(scope="module")
def flex(convert, keras) -> TFLiteGraph:
    import tensorflow as tf

    class CumProd(keras.layers.Layer):
        def call(self, x):
            return tf.math.cumprod(x, axis=-1)

    inputs = keras.Input((16,))
    x = keras.layers.Dense(16)(inputs)
    outputs = CumProd(name="cumprod")(x)
    return convert(keras.Model(inputs, outputs), (16,), int8=False, flex=True)


@pytest.fixture(scope="module")
def upsample(convert, keras) -> tuple[TFLiteGraph, dict[str, str]]:
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.UpSampling2D(name="up")(inputs)
    outputs = keras.layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inputs, outputs)
    return convert(model, (4, 4, 3)), {layer.name: type(layer).__name__ for layer in model.layers}


@pytest.fixture(scope="module")
def sequential(convert, keras) -> tuple[TFLiteGraph, list[str]]:
    """Auto-named layers (dense, dense_1, ...): the case where Keras 3 scope names are ambiguous."""
    keras.backend.clear_session()  # restart Keras' global name counters: other tests built Dense layers before
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), layers.Conv2D(4, 3), layers.ReLU(), layers.Conv2D(4, 3, activation="relu"),
         layers.Flatten(), layers.Dense(8), layers.Dense(8, activation="relu"), layers.Dense(3)]
    )  # fmt: skip
    return convert(model, (8, 8, 3), int8=False, batch=2), [layer.name for layer in model.layers]


# --- graph ------------------------------------------------------------------------------------------


def test_graph_reads_the_real_vww_model(vww, assets: Path) -> None:
    graph = vww["int8"]
    path = assets / "models" / "mlperf_tiny" / "visual_wake_words" / "vww_96_int8.tflite"
    assert graph.size_bytes == path.stat().st_size == 333_288
    assert graph.subgraph_count == 1
    assert graph.op_counts() == {
        "CONV_2D": 14, "DEPTHWISE_CONV_2D": 13, "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1,
    }  # fmt: skip
    assert [op.index for op in graph.ops] == list(range(31))
    first, softmax = graph.ops[0], graph.ops[-1]
    assert first.name == "CONV_2D" and first.options["stride_w"] == 2 and first.options["padding"] == "SAME"
    assert first.options["fused_activation_function"] == "RELU"
    assert softmax.name == "SOFTMAX" and softmax.options == {"beta": 1.0}
    assert graph.ops[28].options["target_shape"] == [-1, 256]  # RESHAPE: from its constant input
    (image,) = graph.input_tensors
    assert image.shape == (1, 96, 96, 3) and image.shape_signature == (-1, 96, 96, 3)
    assert image.dtype == "int8" and image.nbytes == 96 * 96 * 3 and not image.is_constant
    weights = graph.tensors[first.inputs[1]]
    assert weights.is_constant and weights.dtype == "int8" and len(weights.scale) == weights.shape[0]  # per-channel
    assert graph.constant(weights).shape == weights.shape
    assert graph.output_tensors[0].shape == (1, 2)


def test_edgetpu_pair_models_parse_with_the_ground_truth_op_counts(assets: Path) -> None:
    folder = assets / "models" / "edgetpu_pairs"
    with (folder / "partitioning_ground_truth.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t"))
    assert len(rows) >= 7
    for row in rows:
        cpu = TFLiteGraph.from_file(folder / row["cpu_model"])
        assert len(cpu.ops) == int(row["total_ops_cpu"]), row["cpu_model"]
        if row["fully_mapped"] == "yes":  # every op was mapped, so the mapped counts are the CPU model's counts
            assert cpu.op_counts() == json.loads(row["ops_mapped_to_tpu"]), row["cpu_model"]
        compiled = TFLiteGraph.from_file(folder / row["edgetpu_model"])
        assert compiled.op_counts().get("CUSTOM:edgetpu-custom-op") == int(row["n_edgetpu_custom_ops"])


def test_invalid_bytes_raise_input_model_error(vww, assets: Path, tmp_path: Path) -> None:
    with pytest.raises(InputModelError, match="not a TFLite flatbuffer"):
        TFLiteGraph.from_bytes(b"this is not a model at all")
    with pytest.raises(InputModelError, match="not a TFLite flatbuffer"):
        TFLiteGraph.from_bytes(b"")
    real = (assets / "models" / "mlperf_tiny" / "visual_wake_words" / "vww_96_int8.tflite").read_bytes()
    with pytest.raises(InputModelError, match="corrupt TFLite flatbuffer"):
        TFLiteGraph.from_bytes(real[:2000])
    with pytest.raises(InputModelError, match="does not exist"):
        TFLiteGraph.from_file(tmp_path / "missing.tflite")
    onnx_like = tmp_path / "model.tflite"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    with pytest.raises(InputModelError, match="model.tflite is not a TFLite flatbuffer"):
        TFLiteGraph.from_file(onnx_like)


# --- layers ------------------------------------------------------------------------------------------


def test_layer_names_from_keras2_and_keras3_conventions(vww, sequential) -> None:
    # Keras 2 (the real VWW reference): bare scopes, ';'-fused names vote for the op's own layer.
    names = {f"{base}{s}" for base in ("conv2d", "depthwise_conv2d", "batch_normalization", "activation")
             for s in ["", *(f"_{i}" for i in range(1, 27))]} | {"dense", "flatten", "average_pooling2d"}  # fmt: skip
    graph = vww["int8"]
    assert keras3_scoped((t.name for t in graph.tensors), names) is False
    produced = {graph.tensors[op.outputs[0]].name: op for op in graph.ops}
    conv = next(name for name, op in produced.items() if op.index == 2)
    assert conv.startswith("model/activation_2/Relu;model/batch_normalization_2/")
    assert layer_for_tensor(conv, names, keras3_scopes=False) == "conv2d_1"
    assert layer_for_tensor("model/dense/MatMul;model/dense/BiasAdd", names) == "dense"
    assert layer_for_tensor("input_1_int8", names) is None
    # Keras 3 auto-named layers: layer 'dense' is scope 'dense_1', layer 'dense_1' is scope 'dense_1_2'.
    graph, layer_names = sequential
    assert keras3_scoped((t.name for t in graph.tensors), layer_names) is True
    fc = [op for op in graph.ops if op.name == "FULLY_CONNECTED"]
    assert [graph.layer_of(graph.tensors[op.outputs[0]]) for op in fc] == [None, None, None]  # no layers given
    annotated = graph.with_keras_layers(dict.fromkeys(layer_names, "Dense"))
    assert [annotated.layer_of_op(op) for op in fc] == ["dense", "dense_1", "dense_2"]  # the last writes the output
    assert annotated.layer_of(annotated.output_tensors[0]) is None  # 'StatefulPartitionedCall_1:0' names no layer
    convs = [op for op in graph.ops if op.name == "CONV_2D"]
    assert [annotated.layer_of_op(op) for op in convs] == [
        "conv2d",
        "conv2d_1",
    ]  # fused ReLU: 're_lu_1/Relu;conv2d_1/...'


def test_nested_layer_keys_match_consecutive_scopes() -> None:
    # exporter.load's layer map keys a nested duplicate name by its path, 'outer/inner'.
    names = {"backbone": "Functional", "conv": "Conv2D", "head": "Functional", "head/conv": "Conv2D"}
    assert layer_for_tensor("functional_1/head_1/conv_1/convolution", names, keras3_scopes=True) == "head/conv"
    assert layer_for_tensor("functional_1/backbone_1/conv_1/convolution", names, keras3_scopes=True) == "conv"
    assert layer_for_tensor("model/head/conv/Conv2D", names, keras3_scopes=False) == "head/conv"
    assert layer_for_tensor("StatefulPartitionedCall_1:0", names) is None


# --- checks on real models -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_real_vww_int8_passes_every_target(vww, profiles, target: str) -> None:
    result = verify(vww["int8"], profiles[target])
    assert result.ok, [f.message for f in result.errors]
    assert result.unsupported_ops == [] and all(summary.supported for summary in result.ops.values())
    assert result.fully_integer
    assert codes(result, "warning") == {"dynamic_batch"}  # the reference file keeps a -1 batch signature
    assert "stored shape [1, 96, 96, 3]" in result.warnings[0].message
    image, scores = result.io
    assert (image.role, image.shape, image.dtype, image.zero_point) == ("input", (1, 96, 96, 3), "int8", (-128,))
    assert image.scale[0] == pytest.approx(1 / 255)
    assert (scores.role, scores.shape, scores.dtype) == ("output", (1, 2), "int8")
    json.dumps(result.to_dict())


@pytest.mark.parametrize("target", INTEGER_ONLY)
def test_real_vww_float_fails_integer_only_targets(vww, profiles, target: str) -> None:
    result = verify(vww["float"], profiles[target])
    assert not result.ok and not result.fully_integer
    assert {"float_model", "io_dtype"} <= codes(result, "error")
    (float_model,) = [f for f in result.errors if f.code == "float_model"]
    assert "not quantized (31 of 31 ops compute in float" in float_model.message
    assert "android-arm64" in float_model.message
    io_errors = [f.message for f in result.errors if f.code == "io_dtype"]
    assert io_errors == [
        f"Model input 'input_1' is float32; {target} expects int8. Convert with inference_input_type/"
        "inference_output_type int8, and quantize inputs on the device with the tensor's scale and zero point.",
        f"Model output 'Identity' is float32; {target} expects int8. Convert with inference_input_type/"
        "inference_output_type int8, and dequantize outputs on the device with the tensor's scale and zero point.",
    ]


def test_real_vww_float_passes_android_with_warnings(vww, profiles) -> None:
    result = verify(vww["float"], profiles["android-arm64"])
    assert result.ok and not result.fully_integer
    assert codes(result) == {"io_dtype", "dynamic_batch"}
    assert all(f.severity == "warning" for f in result.findings)
    assert "(it also accepts float32)" in result.warnings[0].message


# --- checks on freshly converted models ----------------------------------------------------------------


def test_softmax_over_570_classes_is_flagged_for_tflite_micro_only(softmax_1000, profiles) -> None:
    mcu = verify(softmax_1000, profiles["cortex-m4"])
    assert mcu.fully_integer and codes(mcu, "error") == {"softmax_too_many_classes"}
    (finding,) = mcu.errors
    assert finding.op_name == "SOFTMAX" and finding.op_index == len(softmax_1000.ops) - 1
    assert "has 1000 classes: TFLite Micro's int8 softmax kernel aborts above ~570 classes" in finding.message
    assert verify(softmax_1000, profiles["android-arm64"]).findings == ()
    assert verify(softmax_1000, profiles["edgetpu"]).ok  # 1000 elements is under the Edge TPU's 16000


def test_layernorm_leaves_float_ops_named_by_their_keras_layer(layernorm, profiles) -> None:
    graph, layers = layernorm
    assert layers["ln"] == "LayerNormalization"
    mcu = verify(graph, profiles["cortex-m4"], layers=layers)
    assert not mcu.fully_integer and not mcu.ok
    floats = [f for f in mcu.errors if f.code == "float_op"]
    assert [f.op_name for f in floats] == ["DEQUANTIZE", "NEG", "QUANTIZE"]  # what TF 2.21 leaves (STACK.md)
    assert {f.layer for f in floats} == {"ln"}
    assert all("in layer 'ln' (LayerNormalization) computes in float" in f.message for f in floats)
    assert all("use BatchNormalization, or choose android-arm64" in f.message for f in floats)
    # Without the Keras model, findings still point at the tensor.
    bare = verify(graph, profiles["cortex-m4"])
    assert [f.layer for f in bare.errors] == [None, None, None]
    assert "at tensor 'tfl.dequantize'" in bare.errors[0].message
    android = verify(graph, profiles["android-arm64"], layers=layers)
    assert android.ok and android.findings == () and not android.fully_integer


def test_exact_gelu_is_unsupported_on_cortex_m4_with_the_remedy(gelu, profiles) -> None:
    graph, layers = gelu
    result = verify(graph, profiles["cortex-m4"], layers=layers)
    assert result.unsupported_ops == ["GELU"] and result.fully_integer
    (finding,) = result.errors
    assert (finding.code, finding.op_name, finding.layer) == ("op_not_supported", "GELU", "gelu_act")
    assert finding.message.startswith(
        "Op GELU (op 1) in layer 'gelu_act' (Activation) is not supported by TFLite Micro"
    )
    assert "use ReLU6 or ReLU" in finding.message
    assert verify(graph, profiles["android-arm64"], layers=layers).findings == ()


@pytest.mark.parametrize("target", TARGETS)
def test_flex_ops_are_never_allowed(flex, profiles, target: str) -> None:
    result = verify(flex, profiles[target])
    assert "FlexCumprod" in result.unsupported_ops
    (finding,) = [f for f in result.errors if f.code == "flex_op"]
    assert finding.op_name == "FlexCumprod"
    assert "is a TensorFlow op kept by SELECT_TF_OPS (Flex)" in finding.message
    assert "replace the layer that makes tf.Cumprod" in finding.message
    assert "op_not_supported" not in codes(result)  # one finding per op


def test_upsampling_breaks_the_edgetpu_dimension_rule_and_tflm(upsample, profiles) -> None:
    graph, layers = upsample
    tpu = verify(graph, profiles["edgetpu"], layers=layers)
    assert "TILE" in tpu.unsupported_ops
    dims = [f for f in tpu.errors if f.code == "too_many_dims"]
    assert dims and all(f.layer == "up" for f in dims)
    assert "the Edge TPU allows more than 3 dimensions only when all but the innermost 3 are 1" in dims[0].message
    assert "Resizing(h, w, interpolation='nearest')" in dims[0].message
    mcu = verify(graph, profiles["cortex-m4"], layers=layers)
    assert mcu.unsupported_ops == ["TILE"] and codes(mcu) == {"op_not_supported"}  # TFLM has no dimension rule
    assert "UpSampling2D" in mcu.errors[0].message


def test_batch_and_dynamic_shapes_are_errors_for_devices_warnings_for_android(sequential, profiles) -> None:
    graph, _ = sequential  # exported with batch 2
    for target in INTEGER_ONLY:
        assert "batch_size" in codes(verify(graph, profiles[target]), "error")
    android = verify(graph, profiles["android-arm64"])
    (batch,) = [f for f in android.findings if f.code == "batch_size"]
    assert (
        batch.severity == "warning" and "has batch 2 (shape [2, 8, 8, 3]); android-arm64 runs batch 1" in batch.message
    )


def test_dynamic_non_batch_dimensions(keras, profiles) -> None:
    tf = pytest.importorskip("tensorflow")
    model = keras.Sequential([keras.Input((None, 4)), keras.layers.Dense(2)])
    graph = TFLiteGraph.from_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert graph.input_tensors[0].shape_signature == (-1, -1, 4)
    mcu = verify(graph, profiles["cortex-m4"])
    assert "dynamic_shape" in codes(mcu, "error") and "dynamic_batch" not in codes(mcu)
    assert "has dynamic dimensions (shape signature [-1, -1, 4]); cortex-m4 needs static shapes" in next(
        f.message for f in mcu.errors if f.code == "dynamic_shape"
    )
    assert "dynamic_shape" in codes(verify(graph, profiles["android-arm64"]), "warning")


# --- the registry ---------------------------------------------------------------------------------------


def test_every_check_has_a_unique_code_and_a_one_line_template() -> None:
    templates = message_templates()
    assert len(templates) == len(REGISTRY)
    assert set(templates) >= {
        "flex_op", "op_not_supported", "float_model", "float_op", "io_dtype", "dynamic_batch", "dynamic_shape",
        "batch_size", "softmax_too_many_classes", "softmax_too_large", "too_many_dims",
    }  # fmt: skip
    for code, template in templates.items():
        assert code == code.lower() and " " not in code
        assert "\n" not in template and template.endswith((".", "}")), code
