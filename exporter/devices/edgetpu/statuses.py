"""The status strings ``edgetpu_compiler`` prints in its operator table, and where each was seen.

edgeport's predicted log uses the compiler's own wording so a user can diff it against a real log.
Every string below was printed by a real compiler (versions 14.1-16.0) in a log we can point to; when the
compiler's exact wording for a limitation is not known, edgeport uses the compiler's catch-all
:data:`UNSPECIFIED` and says the real reason in its own "reason" column.
"""

from __future__ import annotations

MAPPED = "Mapped to Edge TPU"
#: A float tensor (the int8->float DEQUANTIZE at a float output, any float op). Seen: mnist4 (15.0), yolov8s (16.0).
UNSUPPORTED_DTYPE = "Operation is working on an unsupported data type"
#: A supported op after the first unmapped one (one Edge TPU subgraph). Seen: tiny_yolo (14.1), yolov5s (15.0).
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
#: Catch-all. Seen for the float->int8 QUANTIZE of a float input (mnist4 15.0, tiny_yolo 14.1, yolov8s 16.0)
#: and for large RESIZE_BILINEAR (google-coral/edgetpu#31).
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
#: An op version the compiler's mapper does not know. Seen: RESIZE_NEAREST_NEIGHBOR (14.1, 15.0).
VERSION_NOT_SUPPORTED = "Operation version not supported"
#: An op the Edge TPU has no kernel for. Seen: LEAKY_RELU, TRANSPOSE (15.0).
NOT_SUPPORTED = "Operation not supported"
#: STRIDED_SLICE with a stride other than 1. Seen: yolov5s (15.0).
STRIDED_SLICE_STRIDES = "Only Strided-Slice with unitary strides supported"

#: Statuses that mean "runs on the Edge TPU".
ON_TPU = frozenset({MAPPED})
