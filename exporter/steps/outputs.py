"""Stage one target's files, only after every step succeeded (see :mod:`exporter.staging`).

The model (and its .gz twin with --gzip, ONNX files where written), the device's files, then
report.md, report.html and report.json: a failed run leaves the previous outputs as they were, and
an unchanged file keeps its mtime so make does not rebuild what depends on it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_bytes, write_text
from ..calibrate.dataset import CalibrationSet
from ..devices import after_write
from ..load.model import SourceModel
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..report.markdown import render_markdown
from ..report.report import VERDICT_NOT_SUPPORTED, Artifact, TargetReport
from ..staging import Stage, checkpoint

log = logging.getLogger(__name__)

MODEL_FILE = "model_int8.tflite"
GZIP_FILE = MODEL_FILE + ".gz"


def common_facts(
    source: SourceModel, calibration: CalibrationSet | None, evaluation: CalibrationSet | None = None
) -> dict[str, Any]:
    return {
        "edgeport_version": __version__,
        "model": {
            "name": source.name,
            "path": str(source.path),
            "format": source.format,
            "loader": source.loader,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.inputs],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.outputs],
            "notes": list(source.notes),
        },
        "calibration": calibration.to_dict() if calibration is not None else None,
        "evaluation": evaluation.to_dict() if evaluation is not None else None,
    }


def write_target(
    report: TargetReport,
    model: bytes | None,
    stage: Stage,
    common: dict[str, Any],
    profile: TargetProfile,
    source: SourceModel,
    onnx: Any,
    opts: ExportOptions | None = None,
) -> None:
    """Stage the target's files: model(s) unless not supported, the device's files, then the reports.

    Nothing reaches the output folder here: :meth:`Stage.commit` moves it all in once every target
    is staged. The reports are rendered last, after the staging folder's name is replaced by the
    output folder's wherever a path was recorded.
    """
    from ..report.html import render_html

    directory = stage.folder
    with stage.active():
        if report.verdict != VERDICT_NOT_SUPPORTED:
            if model is not None:
                write_bytes(directory / MODEL_FILE, model)
                report.artifacts.append(artifact(MODEL_FILE, directory / MODEL_FILE, model))
                checkpoint("staged-model")
                write_gzipped(report, model, stage, bool(opts and opts.gzip))
                after_write(profile, directory / MODEL_FILE, source.layers, report, opts, source.path)
            if "onnx" in report.extra and not isinstance(onnx, Exception) and onnx is not None:
                for onnx_model in (onnx.float_model, onnx.int8_model):
                    if onnx_model is not None:
                        data = Path(onnx_model.path).read_bytes()
                        write_bytes(directory / Path(onnx_model.path).name, data)
                        report.artifacts.append(
                            artifact(Path(onnx_model.path).name, directory / Path(onnx_model.path).name, data)
                        )
        stage.relocate(report)
        report.output_dir = str(stage.final)
        data = report.to_dict(common)
        write_text(directory / "report.md", render_markdown(report, common))
        write_text(directory / "report.html", render_html(data))
        checkpoint("staged-reports")
        write_text(directory / "report.json", report.to_json(common))


def prerender_charts(reports: list[TargetReport]) -> None:
    """Draw the reports' charts now, while the ONNX children run and this thread would only wait: each is
    cached by its data (exporter.report.plots), so the write step reuses them. matplotlib took 0.42 s of
    AD's 0.60 s write step for 5 targets."""
    from ..report.plots import size_plot

    for report in reports:
        rows = report.to_dict().get("size_by_layer")
        if rows:
            size_plot(rows)


def write_gzipped(report: TargetReport, model: bytes, stage: Stage, wanted: bool) -> None:
    """--gzip: model_int8.tflite.gz for compressed downloads; without it, a .gz left by an earlier run goes.

    A stale .gz would hold a different model than the .tflite beside it, and make would ship it.
    """
    from ..analyze.compressed import gzip_best

    path = stage.folder / GZIP_FILE
    if not wanted:
        if (stage.final / GZIP_FILE).exists():
            stage.stale.add(GZIP_FILE)
            log.info(
                "removing %s from an earlier --gzip run: it no longer matches %s", stage.final / GZIP_FILE, MODEL_FILE
            )
        return
    data, strategy = gzip_best(model)
    write_bytes(path, data)
    report.artifacts.append(artifact(GZIP_FILE, path, data))
    report.conversion["gzip"] = (
        f"{GZIP_FILE}: {len(data):,} B ({len(data) / len(model):.0%} of {len(model):,} B; zlib level 9, {strategy} strategy)"
    )


def artifact(name: str, path: Path, data: bytes) -> Artifact:
    return Artifact(name=name, path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
