"""Write the firmware files for one target (see :mod:`exporter.devices.cortex_m`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ... import __version__
from ...atomic import write_bytes
from ...staging import mark_stale
from .arena import with_margin
from .csource import Names, model_data_cc, model_data_h, model_ops_h, model_settings_h
from .make import STAMP, calibration_files, model_mk, refresh_stamp, write_depfile


def write_firmware(
    profile: Any, model_path: Path, section: Any, report: Any, options: Any, source_path: Path | None
) -> None:
    from ...report.report import Artifact
    from ...verify.graph import TFLiteGraph

    directory = model_path.parent
    names = Names.from_option(getattr(options, "c_name", None))
    model = model_path.read_bytes()
    source_name = Path(source_path).name if source_path is not None else model_path.name
    origin = f"{source_name} for target {profile.name} (edgeport {__version__})"
    files: dict[str, bytes] = {}
    if section.vela is not None:
        model = section.vela.model
        files["model_vela.tflite"] = model
        origin += ", compiled by Vela " + section.vela.version
    else:  # an earlier run's NPU model no longer matches the C array: it goes with this commit
        mark_stale(directory / "model_vela.tflite")
    graph = TFLiteGraph.from_bytes(model)
    arena = section.arena
    note = ""
    if arena is None:  # only with --force: TFLite Micro could not run the model here
        arena = with_margin(int(report.memory.get("activation_peak_bytes") or 0), "estimate: peak of live activations")
        note = "MODEL_ARENA_SIZE is an ESTIMATE: TFLite Micro could not run this model on the host (see report.json)."
    files["model_data.h"] = model_data_h(names, model, origin).encode()
    files["model_data.cc"] = model_data_cc(names, model, origin).encode()
    files["model_ops.h"] = model_ops_h(names, section.resolver, origin).encode()
    files["model_settings.h"] = model_settings_h(names, graph, arena.to_dict(), origin, note).encode()
    files[STAMP] = model_mk(names, origin).encode()
    for name, data in files.items():
        write_bytes(directory / name, data)
        report.artifacts.append(Artifact(name, str(directory / name), len(data), hashlib.sha256(data).hexdigest()))
    section.files = list(files)
    depfile = getattr(options, "depfile", None)
    if depfile is not None:
        prerequisites = [p for p in (source_path,) if p is not None]
        prerequisites += calibration_files(getattr(options, "calib", None))
        prerequisites += _profile_files(profile)
        write_depfile(Path(depfile), directory / STAMP, prerequisites)
        refresh_stamp(directory / STAMP)


def _profile_files(profile: Any) -> list[Path]:
    """The profile and the files it inherits from (a change to any of them changes the export)."""
    path = Path(profile.path)
    files = [path]
    for name in sorted(set(profile.sources.values())):
        candidate = path.parent / name
        if candidate.is_file() and candidate not in files:
            files.append(candidate)
    return files
