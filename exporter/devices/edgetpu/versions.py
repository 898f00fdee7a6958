"""Which TFLite op versions ``edgetpu_compiler`` 16 maps: a table with the evidence behind every entry.

An op's version number is chosen by the TFLite converter from the features the op uses (int8 vs
int16, ``keep_num_dims``, ``half_pixel_centers``, a bias input, ...); a newer TensorFlow does not bump the
versions of plain int8 ops. The compiler (last release 16.0.384591198, July 2021) was built against the
TFLite of its day, so two things can happen to a newer version:

* the compiler's *mapper* does not know it: the op stays on the CPU with "Operation version not
  supported" (and, by the one-subgraph rule, so does everything after it);
* the compiler's embedded TFLite does not know it at all: the compiler refuses the whole model
  ("Didn't find op for builtin opcode ... Registration failed ... Model could not be parsed").

``basis`` says why each maximum is what it is:

``observed``  a real compiler mapped exactly this version in a CPU/_edgetpu pair of
              ``assets/models/edgetpu_pairs`` (versions read from the CPU model);
``int8``      the version TFLite gives the op's plain int8 form (what TF 2.21 writes today, read from
              models edgeport exported, and what TF 1.14/1.15 -- Coral's recommended converter --
              wrote: ``tensorflow/lite/tools/versioning/runtime_version.cc`` dates each version);
              the next version adds int16 or another feature the Edge TPU has no use for;
``rejected``  the next version is known to be rejected: the compiler log or issue is cited.

Nothing here is from Coral's own per-op version table, which is not published.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VersionLimit:
    """The highest version of one op that compiler 16 maps, why, and what the next version adds."""

    max_version: int
    basis: str  # "observed" | "int8" | "rejected"
    evidence: str
    #: What the first unsupported version adds (used in the message and the fix).
    next_feature: str = ""


#: Op name -> the highest version compiler 16 maps. Ops not listed here are not on the Edge TPU at all.
MAX_VERSIONS: dict[str, VersionLimit] = {
    "ADD": VersionLimit(2, "observed", "mobv2.tflite: ADD v2 x10 mapped", "int16 or 5-D broadcasting (v3+)"),
    "AVERAGE_POOL_2D": VersionLimit(
        2, "int8", "v1 mapped in mobilenet_v1 pairs; v2 is int8 (TF 1.14); v3 is int16", "int16 (v3)"
    ),
    "CONCATENATION": VersionLimit(
        2, "int8", "v1 mapped in split_concat; v2 is int8 (TF 1.14); v3 is int16", "int16 (v3)"
    ),
    "CONV_2D": VersionLimit(
        3,
        "observed",
        "mnist7/mnist9/mobv2: CONV_2D v3 mapped",
        "hybrid or grouped convolution (v4, v5), int16/int4 (v6)",
    ),
    "DEPTHWISE_CONV_2D": VersionLimit(
        3, "observed", "mobv2.tflite: DEPTHWISE_CONV_2D v3 x17 mapped", "hybrid, int16 (v4+)"
    ),
    "EXPAND_DIMS": VersionLimit(1, "int8", "only version before TF 2.x int16 variants"),
    "FULLY_CONNECTED": VersionLimit(
        4,
        "observed",
        "mnist7/mnist9/mobv2/keras_lstm: FULLY_CONNECTED v4 mapped; v5 (keep_num_dims) reported "
        "'Operation version not supported' in a public compile log",
        "keep_num_dims=True (v5): a Dense layer applied to a 3-D or 4-D tensor",
    ),
    "L2_NORMALIZATION": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)"),
    "LOGISTIC": VersionLimit(
        2, "int8", "v2 is int8 (TF 1.14), written by TF 2.21; LOGISTIC mapped x66 in yolov5n log (16.0)", "int16 (v3)"
    ),
    "MAXIMUM": VersionLimit(2, "int8", "v2 is int8 (TF 1.14), written by TF 2.21", "5-D broadcast or int16 (v3+)"),
    "MAX_POOL_2D": VersionLimit(2, "observed", "mnist7/mnist9: MAX_POOL_2D v2 mapped", "int16 (v3)"),
    "MEAN": VersionLimit(2, "observed", "mobv2.tflite: MEAN v2 mapped", "int16 (v3)"),
    "MINIMUM": VersionLimit(2, "int8", "v2 is int8 (TF 1.14), written by TF 2.21", "5-D broadcast or int16 (v3+)"),
    "MUL": VersionLimit(
        3,
        "int8",
        "v2 int8 written by TF 2.21; v3 dates from TF 1.15; MUL mapped x75 in yolov5n log (16.0)",
        "int16 (v4+)",
    ),
    "PACK": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)", "int16 (v3)"),
    "PAD": VersionLimit(2, "observed", "mobv2.tflite: PAD v2 x5 mapped", "5-D or int16 (v3+)"),
    "PRELU": VersionLimit(1, "int8", "only version"),
    "QUANTIZE": VersionLimit(
        2, "int8", "v1 mapped in mnist9/mobv2/keras_lstm; v2 dates from TF 1.15", "float16 or int16 requantization (v3)"
    ),
    "REDUCE_MAX": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)", "int16 (v3)"),
    "REDUCE_MIN": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)", "int16 (v3)"),
    "RELU": VersionLimit(2, "int8", "v2 is int8 (TF 2.1)", "int16 (v3)"),
    "RELU6": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)", "int16 (v3)"),
    "RELU_N1_TO_1": VersionLimit(1, "int8", "only version"),
    "RESHAPE": VersionLimit(1, "observed", "every pair: RESHAPE v1 mapped"),
    "RESIZE_BILINEAR": VersionLimit(
        2,
        "rejected",
        "v3 (half_pixel_centers, TF >= 2.2) reported 'Operation version not supported' by compilers 14.1 and "
        "15.0 (guichristmann/edge-tpu-tiny-yolo#10, google-coral/edgetpu#396); no log shows 16.0 mapping it",
        "half_pixel_centers=True (v3), which tf.image.resize and Keras Resizing/UpSampling2D use",
    ),
    "RESIZE_NEAREST_NEIGHBOR": VersionLimit(
        2,
        "rejected",
        "v3 (half_pixel_centers, TF >= 2.3) 'Operation version not supported' in tiny_yolo_edgetpu.log (14.1) and "
        "google-coral/edgetpu#420 (15.0); the yolov5 models that map under 16.0 are exported with "
        "tf.raw_ops.ResizeNearestNeighbor(half_pixel_centers=False) (ultralytics --tf-raw-resize)",
        "half_pixel_centers=True (v3), which tf.image.resize and Keras Resizing use",
    ),
    "RSQRT": VersionLimit(2, "int8", "v2 is int8 (TF 2.5, before compiler 16); written by TF 2.21", "int16 (v3)"),
    "SLICE": VersionLimit(3, "int8", "v2/v3 are int8 (TF 1.14)", "int16 or 5-D (v4+)"),
    "SOFTMAX": VersionLimit(2, "observed", "mnist7/mnist9/keras_lstm: SOFTMAX v2 mapped", "int16 (v3)"),
    "SPACE_TO_DEPTH": VersionLimit(2, "int8", "v2 is int8 (TF 1.14)", "int16 (v3)"),
    "SPLIT": VersionLimit(3, "int8", "v1 mapped in split_concat; v2/v3 are int8 (TF 1.14)", "int16 (v4)"),
    "SQUARED_DIFFERENCE": VersionLimit(2, "int8", "v2 is int8 (TF 2.5, before compiler 16)", "int16 (v3)"),
    "SQUEEZE": VersionLimit(
        1, "int8", "v1 dates from TF 1.6; what v2 (TF 2.5) adds is not documented here", "v2 (TF 2.5)"
    ),
    "STRIDED_SLICE": VersionLimit(
        2,
        "int8",
        "v2 is int8 (TF 1.14), written by TF 2.21; mapped x9 in yolov5n log (16.0)",
        "5-D, ellipsis or int16 (v3+)",
    ),
    "SUB": VersionLimit(
        2,
        "int8",
        "v2 is int8 (TF 1.14), written by TF 2.21; SUB mapped in yolov8n log (16.0)",
        "int16 or 5-D broadcast (v3+)",
    ),
    "SUM": VersionLimit(2, "int8", "v2 is int8 (TF 1.15), written by TF 2.21", "int16 (v3)"),
    "TANH": VersionLimit(2, "int8", "v2 is int8 (TF 1.14), written by TF 2.21", "int16 (v3)"),
    "TRANSPOSE": VersionLimit(
        3,
        "int8",
        "v2 is int8 (TF 1.14), written by TF 2.21; TRANSPOSE mapped in yolov8n log (16.0)",
        "5-D or 6-D (v4, v5)",
    ),
    "TRANSPOSE_CONV": VersionLimit(
        2,
        "rejected",
        "v2 is int8 (TF 2.2); v3 adds the bias input (TF 2.3): compiler 2.1 could not parse it "
        "(google-coral/edgetpu#147) and 14.1/15.0 aborted with an internal error on such a model (#358)",
        "a bias input (v3), which Keras Conv2DTranspose(use_bias=True) produces",
    ),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": VersionLimit(
        1, "observed", "keras_lstm_mnist_ptq: v1 (full int8) mapped", "hybrid float weights (v2+)"
    ),
}

#: Versions the compiler's embedded TFLite cannot even parse: the whole compile fails, not one op.
#: Only entries a real compiler 16.0 was seen to refuse are listed.
PARSE_LIMITS: dict[str, tuple[int, str]] = {
    "CONV_2D": (
        5,
        "compiler 16.0: \"Didn't find op for builtin opcode 'CONV_2D' version '6'\" (google-coral/edgetpu#631, TF 2.9)",
    ),
    "EXP": (
        1,
        "compiler 16.0: \"Didn't find op for builtin opcode 'EXP' version '2'\" (google-coral/libedgetpu#71, TF 2.16)",
    ),
}


def version_table() -> list[dict[str, object]]:
    """The table as rows, for documentation and ``--json``."""
    return [
        {
            "op": name,
            "max_version": v.max_version,
            "basis": v.basis,
            "evidence": v.evidence,
            "next_version_adds": v.next_feature,
        }
        for name, v in sorted(MAX_VERSIONS.items())
    ]
