"""A target's files appear together or not at all: real SIGINTs during the write step, and a full disk.

The interrupts are real signals (``EDGEPORT_TEST_SIGINT_AT`` makes edgeport send itself SIGINT at a
named point of the write step, so the test does not race the clock); the full disk is a real 1 MB
tmpfs. Each run must end exit 130 or 2 with the output folder exactly as it was before (bytes and
mtimes), or, when the signal came during the moves, with every new file in place, and never with a
staging folder left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from cli_helpers import run_cli

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def python_sigint_handler():
    """Background shells start jobs with SIGINT ignored; edgeport sees what an interactive user's would."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones included) with its bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".edgeport-staging-*"))


def export(capsys, model: Path, calib: Path, out: Path, *extra: str):
    return run_cli(capsys, "export", model, "--target", "cortex-m4", "--calib", calib, "-o", out, "--quiet", *extra)


@pytest.mark.parametrize("point", ["staged-model", "staged-reports"])
def test_sigint_while_staging_keeps_the_previous_outputs(
    capsys, monkeypatch, tmp_path, tiny_keras_path, tiny_calib_path, python_sigint_handler, point
):
    out = tmp_path / "build" / "cortex-m4"
    first = export(capsys, tiny_keras_path, tiny_calib_path, out)
    assert first.code == 0, first.err
    before = snapshot(tmp_path / "build")
    monkeypatch.setenv("EDGEPORT_TEST_SIGINT_AT", point)
    run = export(capsys, tiny_keras_path, tiny_calib_path, out, "--c-name", "g_other")  # every C file changes
    assert run.code == 130, run.err
    assert "interrupted" in run.err and "Traceback" not in run.err
    assert snapshot(tmp_path / "build") == before, "an interrupted run must leave the previous outputs untouched"
    assert leftovers(tmp_path) == []


def test_sigint_while_staging_a_new_folder_leaves_no_folder(
    capsys, monkeypatch, tmp_path, tiny_keras_path, tiny_calib_path, python_sigint_handler
):
    monkeypatch.setenv("EDGEPORT_TEST_SIGINT_AT", "staged-reports")
    run = export(capsys, tiny_keras_path, tiny_calib_path, tmp_path / "build" / "cortex-m4")
    assert run.code == 130, run.err
    assert not (tmp_path / "build" / "cortex-m4").exists()
    assert leftovers(tmp_path) == []


def test_sigint_during_the_moves_is_held_until_the_target_is_complete(
    capsys, monkeypatch, tmp_path, tiny_keras_path, tiny_calib_path, python_sigint_handler
):
    out = tmp_path / "build" / "cortex-m4"
    depfile = tmp_path / "build" / "model.d"
    assert export(capsys, tiny_keras_path, tiny_calib_path, out, "--depfile", depfile).code == 0
    monkeypatch.setenv("EDGEPORT_TEST_SIGINT_AT", "commit")  # sent after the first file moved in
    run = export(capsys, tiny_keras_path, tiny_calib_path, out, "--c-name", "g_other", "--depfile", depfile)
    assert run.code == 130, run.err
    report = json.loads((out / "report.json").read_text())
    for artifact in report["artifacts"]:
        path = Path(artifact["path"])
        assert path.parent == out, f"{path}: reports must name the output folder, never the staging folder"
        assert path.stat().st_size == artifact["bytes"], f"{path.name} is not the file report.json describes"
    assert "g_other" in (out / "model_data.h").read_text()
    stamp = (out / "model.mk").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= stamp for p in out.iterdir()), "model.mk must be the newest file"
    assert str(out / "model.mk") in depfile.read_text() and "staging" not in depfile.read_text()
    assert leftovers(tmp_path) == []


def test_a_new_output_folder_is_not_private(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    out = tmp_path / "fresh" / "cortex-m4"
    assert export(capsys, tiny_keras_path, tiny_calib_path, out).code == 0
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask, "the staged folder's 0700 must not reach the output folder"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str):
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_fails_cleanly_and_keeps_the_previous_outputs(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "cortex-m4"
        first = export(capsys, tiny_keras_path, tiny_calib_path, out)
        assert first.code == 0, first.err
        before = snapshot(disk)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 8192))  # room for a report, not for a whole target
        before["filler"] = ((disk / "filler").read_bytes(), (disk / "filler").stat().st_mtime_ns)
        run = export(capsys, tiny_keras_path, tiny_calib_path, out, "--c-name", "g_other")
        lines = [line for line in run.err.splitlines() if line.strip()]
        assert run.code == 2, run.err
        assert len(lines) == 1 and "No space left" in lines[0] and "-o" in lines[0], run.err
        assert snapshot(disk) == before, "a full disk must leave the previous outputs untouched"
        assert leftovers(disk) == []


def test_a_stale_npu_model_goes_when_vela_is_gone(capsys, monkeypatch, tmp_path, tiny_keras_path, tiny_calib_path):
    """model_vela.tflite from a run with Vela must not sit beside a C array that no longer embeds it."""
    out = tmp_path / "npu"
    args = ("export", tiny_keras_path, "--target", "cortex-m55-ethos-u55", "--calib", tiny_calib_path, "-o", out)
    first = run_cli(capsys, *args, "--quiet")
    assert first.code == 0, first.err
    assert (out / "model_vela.tflite").is_file()
    monkeypatch.setattr("exporter.devices.cortex_m.vela.available", lambda: False)
    second = run_cli(capsys, *args, "--quiet")
    assert second.code == 0, second.err
    assert not (out / "model_vela.tflite").exists()
    assert "Vela" not in (out / "model_data.h").read_text()


def test_a_killed_runs_staging_leftovers_are_swept_by_the_next_run(capsys, tiny_keras_path, tiny_calib_path, tmp_path):
    """SIGKILL (or an OOM kill) runs no cleanup: its staging folder and staged depfile stay. The next export
    into the same place removes what a dead process left, and leaves what a live one (a concurrent export)
    is still writing."""
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    killed.wait()  # a pid that no longer exists
    out = tmp_path / "out"
    tmp_path.joinpath("out").mkdir()
    dead_folder = tmp_path / f".edgeport-staging-out-{killed.pid}-abc123_x"
    dead_folder.mkdir()
    (dead_folder / "model_int8.tflite").write_bytes(b"half")
    dead_file = tmp_path / f".edgeport-staging-model.d-{killed.pid}-0"
    dead_file.write_text("half")
    live_folder = tmp_path / f".edgeport-staging-out-{os.getppid()}-def456_y"
    live_folder.mkdir()
    stranger = tmp_path / ".edgeport-staging-notes"  # no pid: not ours to judge
    stranger.mkdir()
    assert export(capsys, tiny_keras_path, tiny_calib_path, out).code == 0
    assert not dead_folder.exists() and not dead_file.exists()
    assert live_folder.is_dir() and stranger.is_dir()
    assert (out / "model_int8.tflite").is_file()
