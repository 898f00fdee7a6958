"""onnxruntime for ``.onnx`` files, on the CPU execution provider with the profile's thread count.

One inference at a time (``inter_op_num_threads=1``, sequential execution) so the thread count means
what it means for LiteRT: threads inside one operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .engine import EngineError, InputSpec

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}  # fmt: skip


class OnnxEngine:
    def __init__(self, path: Path, *, threads: int) -> None:
        self.path = path
        self.threads = threads
        self.session = None
        self.feed: dict[str, np.ndarray] = {}

    def load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(
                "model",
                f"onnxruntime cannot load {self.path}: {first[:300]}",
                "Pass a valid .onnx file (onnx.checker.check_model tells what is wrong).",
            ) from exc

    def input_specs(self) -> list[InputSpec]:
        specs = []
        for arg in self.session.get_inputs():
            dims = list(arg.shape)
            shape = []
            for i, dim in enumerate(dims):
                if isinstance(dim, int) and dim > 0:
                    shape.append(dim)
                elif i == 0:
                    shape.append(1)  # a symbolic batch: benchmark batch 1, like every edge target
                else:
                    raise EngineError(
                        "usage",
                        f"ONNX input '{arg.name}' has a dynamic dimension {i} ({dim!r}) in shape {dims}.",
                        "Export the model with a static input shape.",
                    )
            if arg.type not in _ORT_TYPES:
                raise EngineError("usage", f"ONNX input '{arg.name}' has type {arg.type}, which edgeport cannot feed.")
            specs.append(InputSpec(name=arg.name, shape=tuple(shape), dtype=np.dtype(_ORT_TYPES[arg.type])))
        return specs

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        self.feed = {arg.name: a for arg, a in zip(self.session.get_inputs(), arrays, strict=True)}

    def invoke(self) -> None:
        self.session.run(None, self.feed)
