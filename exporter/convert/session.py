"""One model's conversions during one export: prepared once, each quantization config converted once.

Several targets usually share a quantization config, and the accuracy guard converts the same model
again with other settings; a session keeps the static SavedModel, the calibration files and every
result, so no work is repeated. Every conversion runs in a child (a worker host of the export's
:class:`~exporter.workers.WorkerPool`, else a one-shot child); :meth:`ConversionSession.prefetch` starts
one early so it runs beside other work (the ONNX export, the float twin for per-layer error).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..calibrate.dataset import CalibrationSet
from ..load.model import SourceModel
from ..progress import Progress
from .input_range import pin_input_range
from .io_order import order_io, signature_keys
from .tflite import QuantizationConfig, prepare_saved_model, run_converter, write_calibration


@dataclass
class Converted:
    """A converted model and how it was made (for the report's ``conversion`` section)."""

    model: bytes
    info: dict[str, Any] = field(default_factory=dict)


class ConversionSession:
    """Converts ``source`` under any :class:`QuantizationConfig`, caching by config."""

    def __init__(
        self,
        source: SourceModel,
        calibration: CalibrationSet,
        work: Path,
        progress: Progress,
        calibration_with: Callable[[int], CalibrationSet] | None = None,
    ) -> None:
        self.source = source
        self.calibration = calibration
        self.work = work
        self.progress = progress
        self._calibration_with = calibration_with
        self._saved_model: tuple[Path, str] | None = None
        self._results: dict[QuantizationConfig, Converted] = {}
        self._calib_files: dict[int, Path] = {}
        self._float: bytes | None = None
        self._pending: dict[QuantizationConfig | None, Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._jobs = 0

    def _prepared(self) -> tuple[Path, str]:
        if self._saved_model is None:
            self.progress.step("convert", "preparing a static-shape SavedModel")
            self._saved_model = prepare_saved_model(self.source, self.work)
        return self._saved_model

    def _calibration_file(self, config: QuantizationConfig) -> tuple[Path, CalibrationSet]:
        samples = config.calib_samples or self.calibration.count
        calibration = self.calibration
        if samples != self.calibration.count and self._calibration_with is not None:
            calibration = self._calibration_with(samples)
        if samples not in self._calib_files:
            self._calib_files[samples] = write_calibration(calibration, self.work / f"calibration_{samples}.npz")
        return self._calib_files[samples], calibration

    def convert(self, config: QuantizationConfig) -> Converted:
        """The model under ``config`` (converted now, prefetched, or from an earlier identical request)."""
        if config not in self._results:
            pending = self._pending.pop(config, None)
            self._results[config] = pending.result() if pending is not None else self._job(config)()
        return self._results[config]

    def float_model(self) -> bytes:
        """A float TFLite twin of the same SavedModel: the reference for SavedModel sources and per-layer error."""
        if self._float is None:
            pending = self._pending.pop(None, None)
            self._float = pending.result() if pending is not None else self._float_job()()
        return self._float

    def prefetch(self, config: QuantizationConfig | None) -> None:
        """Start converting ``config`` (None: the float twin) on a worker host now; :meth:`convert` (or
        :meth:`float_model`) then waits for it. The SavedModel is prepared here, in the calling thread
        (TensorFlow tracing stays on one thread); the thread only waits for the host and edits bytes."""
        done = self._float is not None if config is None else config in self._results
        if done or config in self._pending:
            return
        job = self._float_job() if config is None else self._job(config)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgeport-convert")
        self._pending[config] = self._executor.submit(contextvars.copy_context().run, job)

    def _job(self, config: QuantizationConfig) -> Callable[[], Converted]:
        saved_model, mode = self._prepared()
        calib_path, calibration = self._calibration_file(config)
        tag = f"int8_{self._jobs}"
        self._jobs += 1
        self.progress.step("convert", f"converting ({config.describe()})")

        def run() -> Converted:
            started = time.perf_counter()
            model = run_converter(
                self.source, saved_model, mode, self.work, config=config, calib_path=calib_path, tag=tag
            )
            model = order_io(model, *signature_keys(self.source))
            seconds = time.perf_counter() - started
            pins = []
            if not config.int16_activations:
                for index, declared in enumerate(calibration.declared_ranges or []):
                    if declared is not None:
                        model, pin = pin_input_range(model, index, declared)
                        pins.append(pin.detail)
            clustering = None
            if config.int8_clusters:
                from ..analyze.litert_child import cluster_in_child

                model, clustering = cluster_in_child(
                    model, calibration.arrays, config.int8_clusters, max_decoded_bytes=config.int8_lut_max_decoded
                )
            info = {
                "scheme": config.describe(),
                "io_dtype": "int16" if config.int16_activations and config.io_dtype != "float32" else config.io_dtype,
                "per_channel": config.per_channel,
                "int16_activations": config.int16_activations,
                "calibration_samples": calibration.count,
                "input_quantization": pins,
                "converter": f"tf.lite.TFLiteConverter ({mode}, {_ops_for(config)})",
                "seconds": round(seconds, 2),
            }
            if clustering is not None:
                info["clustering"] = clustering.summary()
                info["int8_clustering"] = {
                    **clustering.to_dict(),
                    "max_values_per_channel": max((t["distinct_after"] for t in clustering.tensors), default=0),
                }
            return Converted(model, info)

        return run

    def _float_job(self) -> Callable[[], bytes]:
        saved_model, mode = self._prepared()
        self.progress.step("convert", "converting a float reference")

        def run() -> bytes:
            model = run_converter(self.source, saved_model, mode, self.work, config=None, calib_path=None, tag="float")
            return order_io(model, *signature_keys(self.source))

        return run


def _ops_for(config: QuantizationConfig) -> str:
    if config.float_nodes:
        return "TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS for the float-fallback ops"
    if config.int16_activations:
        return "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 only"
    return "TFLITE_BUILTINS_INT8 only"
