"""ONNX for the targets that want it: one export shared by all of them, attached to each report.

ONNX never takes TFLite down. The export runs once, before the targets; when it fails (unsupported
op, converter crash, out of memory) the failure is kept, not raised, and every TFLite target is
still converted and written:

- a target that writes TFLite and ONNX (android-arm64 by default, or ``--format tflite,onnx``) keeps
  its TFLite verdict and gets the warning ``ONNX not written: <reason>``, printed on the terminal and
  stored in report.json (``warnings`` and ``onnx_error``); when ONNX was asked for by ``--format``,
  the export's exit code is 3;
- a target that writes only ONNX (the generic ``onnx`` target, or ``--format onnx``) has nothing to
  write: its verdict is "not supported" with that reason, so the exit code is 3 and only its reports
  are written (an ``.onnx`` left there by an earlier run is removed, so nothing stale looks current).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ..childproc import first_line
from ..errors import EdgeportError, UsageError
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..progress import Progress
from ..report.report import VERDICT_NOT_SUPPORTED, VERDICT_OK, TargetReport
from ..staging import Stage
from .analysis import fidelity_inputs

log = logging.getLogger(__name__)

ONNX_FILES = ("model_float.onnx", "model_int8.onnx")


class OnnxFailure(Exception):
    """Why the shared ONNX export wrote nothing; ``requested`` when the user asked for ONNX explicitly."""

    def __init__(self, reason: str, exit_code: int, requested: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code
        self.requested = requested

    def to_dict(self) -> dict[str, Any]:
        return {"written": False, "error": self.reason, "exit_code": self.exit_code, "requested": self.requested}


def formats_for(profile: TargetProfile, opts: ExportOptions) -> tuple[str, ...]:
    """What to write for this target: --format when given (TFLite-only targets keep TFLite), else the profile's."""
    if opts.formats is None:
        return profile.formats
    if profile.formats == ("onnx",):
        return ("onnx",)
    return opts.formats


#: Above this many parameters the ONNX children run after the TFLite conversion, not beside it: tf2onnx
#: needed 6.8 GB for ResNet50 (25.6M), and a converter host beside it could exhaust a CI machine.
OVERLAP_MAX_PARAMS = 10_000_000


class OnnxJob:
    """The run's one ONNX export: traced in the main thread, its child processes finishing in a background
    thread while the TFLite conversion runs (2+ cores, models up to :data:`OVERLAP_MAX_PARAMS`)."""

    def __init__(self, value: Any = None, wanted: str = "") -> None:
        self._value = value
        self._wanted = wanted
        self._thread: threading.Thread | None = None
        self._reported = False

    def run_in_background(self, finish: Callable[[], Any], explicit: bool) -> None:
        def target() -> None:
            self._value = _finished(finish, explicit)

        context = contextvars.copy_context()  # the export's WorkerPool goes with it
        self._thread = threading.Thread(target=context.run, args=(target,), name="edgeport-onnx", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The children are still at work (so this thread has time for something else)."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Let the background children end (a failed run must not leave them writing into its scratch folder)."""
        if self._thread is not None:
            self._thread.join()

    def result(self, progress: Progress) -> Any:
        """The OnnxExport, an OnnxFailure (said once, on the terminal too) or None when no target wants ONNX."""
        if self._thread is not None:
            if self._thread.is_alive():
                progress.step("convert", "waiting for the ONNX export")
            self._thread.join()
            self._thread = None
        if isinstance(self._value, OnnxFailure) and not self._reported:
            self._reported = True
            log.warning("ONNX not written (%s): %s", self._wanted, self._value.reason)
            progress.note("ONNX not written; the TFLite targets continue")
        return self._value


def start_onnx(source, profiles, opts, calibration, evaluation, work, progress) -> OnnxJob:
    """Start the one ONNX export every target that wants it shares; a failure becomes an :class:`OnnxFailure`."""
    wanted = [p for p in profiles if "onnx" in formats_for(p, opts)]
    if not wanted:
        return OnnxJob(None)
    names = ", ".join(p.name for p in wanted)
    explicit = opts.formats is not None or any(p.formats == ("onnx",) for p in wanted)
    if source.keras_model is None:
        error = UsageError("ONNX export needs a Keras model (.keras or .h5).", hint="Pass --format tflite.")
        if explicit:
            raise error  # bad input, known before any work: exit 2 as for any other argument error
        return OnnxJob(OnnxFailure(str(error), error.exit_code, explicit), names)
    from ..convert.onnx import start_export_onnx

    progress.step("convert", "exporting ONNX (float and int8 QDQ, in child processes)")
    check = fidelity_inputs(evaluation) if evaluation is not None else None
    job = OnnxJob(None, names)
    finish = _finished(
        lambda: start_export_onnx(
            source,
            work / "onnx",
            calibration=calibration,
            opset=opts.onnx_opset,
            dynamic_batch=opts.onnx_dynamic_batch,
            per_channel=True if opts.per_channel is None else opts.per_channel,
            calibrate_method=opts.onnx_calibrate,
            check_inputs=check,
            check_inputs_from=f"{evaluation.count} evaluation samples from {evaluation.source}" if evaluation else None,
        ),
        explicit,
    )
    if isinstance(finish, OnnxFailure):
        job._value = finish
    elif (os.cpu_count() or 1) >= 2 and source.keras_model.count_params() <= OVERLAP_MAX_PARAMS:
        job.run_in_background(finish, explicit)
    else:
        job._value = _finished(finish, explicit)
    return job


def export_onnx_once(source, profiles, opts, calibration, evaluation, work, progress) -> Any:
    """:func:`start_onnx` and wait for it (callers that have nothing to do meanwhile)."""
    return start_onnx(source, profiles, opts, calibration, evaluation, work, progress).result(progress)


def _finished(step: Callable[[], Any], explicit: bool) -> Any:
    """``step()``, or the OnnxFailure that says why it failed: an ONNX failure must not cost the TFLite targets."""
    try:
        return step()
    except EdgeportError as exc:
        return OnnxFailure(str(exc), exc.exit_code, explicit)
    except Exception as exc:  # a bug on the ONNX path
        log.debug("ONNX export failed", exc_info=True)
        reason = f"internal error in the ONNX export: {type(exc).__name__}: {first_line(exc)} (re-run with --debug and report it)"
        return OnnxFailure(reason, 1, explicit)


def attach_onnx(report: TargetReport, profile: TargetProfile, opts: ExportOptions, onnx: Any) -> None:
    if "onnx" not in formats_for(profile, opts) or onnx is None:
        return
    if isinstance(onnx, Exception):
        failure = onnx if isinstance(onnx, OnnxFailure) else OnnxFailure(str(onnx), 4, False)
        report.warnings.append(f"ONNX not written: {failure.reason}")
        report.extra["onnx_error"] = failure.to_dict()
        return
    report.extra["onnx"] = onnx.to_dict()


def onnx_failed_on_request(reports: list[TargetReport]) -> bool:
    """True when ONNX was asked for explicitly (``--format``/``onnx`` target) and was not written."""
    return any((r.extra.get("onnx_error") or {}).get("requested") for r in reports)


def onnx_only_report(profile: TargetProfile, onnx: Any) -> TargetReport:
    """The generic ONNX target: no TFLite model, the ONNX files and their checks are the result."""
    if isinstance(onnx, Exception) or onnx is None:
        reason = onnx.reason if isinstance(onnx, OnnxFailure) else str(onnx or "ONNX export did not run")
        return TargetReport(
            target=profile.name,
            profile=profile.to_dict(),
            verdict=VERDICT_NOT_SUPPORTED,
            reasons=[f"ONNX not written: {reason}"],
            conversion={"scheme": "ONNX: float (tf2onnx) and int8 QDQ (onnxruntime quantize_static)"},
        )
    int8 = onnx.int8_model
    fidelity = int8.check.to_dict().get("fidelity") if int8 is not None else None
    return TargetReport(
        target=profile.name,
        profile=profile.to_dict(),
        verdict=VERDICT_OK,
        conversion={
            "scheme": "ONNX: float (tf2onnx) and int8 QDQ (onnxruntime quantize_static)",
            "converter": onnx.to_dict().get("converter"),
            "fidelity_semantics": int8.check.semantics if int8 is not None else onnx.float_model.check.semantics,
        },
        memory={"model_bytes": int8.size_bytes if int8 is not None else onnx.float_model.size_bytes},
        fidelity=fidelity,
    )


def drop_stale_onnx(report: TargetReport, stage: Stage) -> None:
    """An ONNX that was wanted and not written: the .onnx files an earlier run left go with the commit."""
    if "onnx_error" not in report.extra:
        return
    for name in ONNX_FILES:
        if (stage.final / name).exists():
            stage.stale.add(name)
            log.info("removing %s from an earlier run: this export did not write ONNX", stage.final / name)


__all__ = [
    "OnnxFailure",
    "attach_onnx",
    "drop_stale_onnx",
    "export_onnx_once",
    "OnnxJob",
    "start_onnx",
    "formats_for",
    "onnx_failed_on_request",
    "onnx_only_report",
]
