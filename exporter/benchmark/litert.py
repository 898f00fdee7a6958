"""LiteRT (``ai_edge_litert``), the interpreter Android apps and the Edge TPU's CPU part run.

XNNPACK is LiteRT's default delegate; a profile that turns it off gets the builtin kernels only, via
``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (the only switch the Python API offers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .engine import EngineError, InputSpec


class LiteRTEngine:
    def __init__(self, blob: bytes, *, threads: int, xnnpack: bool) -> None:
        self.blob = blob
        self.threads = threads
        self.xnnpack = xnnpack
        self.interp = None

    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from ..convert.compact import for_litert

        self.blob = for_litert(self.blob)  # edgeport's Cortex-M layout: the same model, zero points repeated
        kwargs = {}
        if not self.xnnpack:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interp = Interpreter(model_content=self.blob, num_threads=self.threads, **kwargs)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(
                "not_supported",
                f"LiteRT cannot run this model: {first}",
                "Export it with edgeport for this target (Flex/Select TF ops and custom ops are not in LiteRT).",
            ) from exc

    def input_specs(self) -> list[InputSpec]:
        specs = []
        for detail in self.interp.get_input_details():
            scale, zero_point = detail["quantization"]
            specs.append(
                InputSpec(
                    name=detail["name"],
                    shape=tuple(int(d) for d in detail["shape"]),
                    dtype=np.dtype(detail["dtype"]),
                    scale=float(scale),
                    zero_point=int(zero_point),
                )
            )
        return specs

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        for detail, array in zip(self.interp.get_input_details(), arrays, strict=True):
            self.interp.set_tensor(detail["index"], array)

    def invoke(self) -> None:
        self.interp.invoke()
