"""Test helpers: run the real CLI entry point in-process, and import Keras the way edgeport does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.cli import main


@dataclass
class CliRun:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.err.splitlines() if ln.startswith("edgeport: error:")]
        return lines[-1] if lines else ""


def run_cli(capsys, *args: str | Path) -> CliRun:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def quiet_keras():
    """Keras, imported once and quietly (TensorFlow's start-up banners silenced), as the CLI does."""
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    return keras
