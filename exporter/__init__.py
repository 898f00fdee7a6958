"""edgeport: export Keras models to verified full-int8 TFLite for phones, the Edge TPU and Cortex-M.

The public API mirrors the CLI::

    import exporter
    result = exporter.export("model.keras", target="cortex-m4", calib="calib.npz", output_dir="build")
    print(result.summary())

Attributes are imported on first use, so ``import exporter`` (and ``edgeport --help``) stays fast:
TensorFlow is loaded only by the steps that need it. ``exporter.benchmark`` and ``exporter.verify`` are
both functions and the pipeline's stage packages (``exporter/benchmark/``, ``exporter/verify/``): they are
callable modules, so ``exporter.verify(graph, profile)`` and ``exporter.verify.TFLiteGraph`` both work in
any import order (see :class:`_CallableModule`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "export": ("exporter.pipeline", "export"),
    "ExportResult": ("exporter.pipeline", "ExportResult"),
    "ExportOptions": ("exporter.options", "ExportOptions"),
    "load_profile": ("exporter.profiles", "load_profile"),
    "available_targets": ("exporter.profiles", "available_targets"),
    "TargetProfile": ("exporter.profiles", "TargetProfile"),
    "load_model": ("exporter.load", "load_model"),
    "load_calibration": ("exporter.calibrate", "load_calibration"),
    "verify": ("exporter.verify", "verify"),
    "TFLiteGraph": ("exporter.verify.graph", "TFLiteGraph"),
    "estimate_memory": ("exporter.analyze.memory", "estimate_memory"),
    "EdgeportError": ("exporter.errors", "EdgeportError"),
    "benchmark": ("exporter.benchmark", "benchmark"),
    "measure_arena": ("exporter.benchmark", "measure_arena"),
    "analyze_edgetpu": ("exporter.devices.edgetpu", "analyze_edgetpu"),
    "bench_on_device": ("exporter.devices.android", "bench_on_device"),
    "export_onnx": ("exporter.convert.onnx", "export_onnx"),
}

__all__ = ["__version__", *_LAZY]

#: Public functions that share their name with a subpackage defining them (``exporter/verify/`` defines
#: ``verify``): the attribute is the subpackage, made callable.
_CALLABLE_SUBPACKAGES = frozenset(
    name for name, (module, attr) in _LAZY.items() if (module, attr) == (f"{__name__}.{name}", name)
)


class _CallableModule(types.ModuleType):
    """A subpackage that can be called as the function it is named after (``exporter.verify(graph, profile)``).

    Why: importing ``exporter.verify.graph`` (as ``exporter.TFLiteGraph`` and the pipeline do) makes the import
    system set the submodule ``verify`` as an attribute of ``exporter``, replacing the lazily exposed function;
    exposing the function instead would break ``exporter.verify.TFLiteGraph`` and ``mock.patch`` paths. A
    module that is also callable keeps both meanings whatever was imported first.
    """

    def _function(self) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._function())


class _Package(types.ModuleType):
    """The ``exporter`` package: makes the subpackages of :data:`_CALLABLE_SUBPACKAGES` callable as the import
    system attaches them (it calls ``setattr(exporter, "verify", module)``), so no import order can undo it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_SUBPACKAGES and isinstance(value, types.ModuleType):
            if value.__name__ == f"{__name__}.{name}" and type(value) is types.ModuleType:
                value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        imported = importlib.import_module(module)
        # For a callable subpackage, the import above has already set it (callable) as our attribute.
        value = imported if name in _CALLABLE_SUBPACKAGES else getattr(imported, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
