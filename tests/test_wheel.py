"""The built wheel works on its own: every package and data file is in it, and the installed CLI exports.

The wheel is built from a copy of the sources (nothing is written into the checkout), installed with
``pip install --no-deps --target DIR``, and run by an interpreter that sees DIR and the venv's third-party
packages but nothing of the repository: a fresh venv whose only link to ``.venv`` is a ``.pth`` line
naming its site-packages. Such a line adds the folder without running the ``.pth`` files inside it, so
the editable install's import hook (which would quietly serve a module missing from the wheel out of the
checkout) is not installed; ``PYTHONSAFEPATH`` keeps the working directory off ``sys.path``; and the
child processes edgeport starts (converter, benchmark, TFLite Micro) use the same interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the build reads: the project metadata, the README (long description) and the package sources
#: with the data folders its symlinks point to.
BUILD_INPUTS = ("pyproject.toml", "README.md", "exporter", "targets", "docs")
MCU_FILES = ("model_int8.tflite", "report.json", "report.md", "model_data.cc", "model_data.h", "model_ops.h")

pytestmark = pytest.mark.slow


def _package_dirs() -> list[str]:
    """Every folder of exporter/ holding an __init__.py, as a path inside the wheel (symlinks followed)."""
    found = []
    for folder, dirs, files in os.walk(ROOT / "exporter", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" in files:
            found.append(Path(folder).relative_to(ROOT).as_posix())
    return sorted(found)


def _data_files() -> list[str]:
    """The profiles, op lists and guides, as paths inside the wheel."""
    names = [f"exporter/profiles_data/{p.name}" for p in (ROOT / "targets").glob("*.toml")]
    names += [f"exporter/profiles_data/ops/{p.name}" for p in (ROOT / "targets" / "ops").glob("*.txt")]
    names += [f"exporter/docs/{p.name}" for p in (ROOT / "docs").glob("*.md")]
    return sorted(names)


def _run(cmd: list[str | Path], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    major, minor = (int(p) for p in version("setuptools").split(".")[:2])
    if (major, minor) < (77, 0):
        pytest.fail(f"setuptools {version('setuptools')} in this venv cannot build the wheel; run 'make setup'")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-v"]
    proc = _run([*cmd, "-w", dist, src], env, src)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "would be ignored" not in log and "Warning" not in log, log[-4000:]
    (path,) = dist.glob("edgeport-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into DIR, and an interpreter + environment that see DIR and no repository file."""
    iso = tmp_path_factory.mktemp("iso")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", iso / "venv"], check=True)
    python = iso / "venv" / "bin" / "python"
    site = Path(_run([python, "-c", "import site; print(site.getsitepackages()[0])"], {}, iso).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "edgeport_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n", encoding="utf-8")
    target = iso / "DIR"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(iso)),
        "PYTHONPATH": str(target),
        "PYTHONSAFEPATH": "1",
        "PYTHONNOUSERSITE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "COLUMNS": "200",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--root-user-action=ignore"]
    proc = _run([*install, "--target", target, wheel], env, iso)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path_factory.mktemp("outside")  # the working directory of every run: no repository file
    return {"python": python, "dir": target, "env": env, "cwd": work}


def test_wheel_holds_every_package_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = _package_dirs()
    assert {"exporter", "exporter/steps", "exporter/profiles_data", "exporter/devices/cortex_m"} <= set(packages)
    assert [p for p in packages if f"{p}/__init__.py" not in names] == []
    data = _data_files()
    assert len(data) >= 10 and [d for d in data if d not in names] == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "edgeport = exporter.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_interpreter_sees_no_repository_file(installed):
    probe = (
        "import json, sys, exporter, exporter.profiles as p; "
        "print(json.dumps({'file': exporter.__file__, 'path': sys.path, 'profiles': [p.load_profile('cortex-m4').path, str(p.op_list_path('tflm'))], "
        "'hooks': [type(f).__name__ for f in sys.meta_path]}))"
    )
    proc = _run([installed["python"], "-c", probe], installed["env"], installed["cwd"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert Path(seen["file"]).is_relative_to(installed["dir"])
    assert all(Path(f).is_file() and Path(f).is_relative_to(installed["dir"]) for f in seen["profiles"])
    leaks = [p for p in seen["path"] if p and (Path(p).resolve().is_relative_to(ROOT) or "shared" in Path(p).parts)]
    leaks = [p for p in leaks if not Path(p).resolve().is_relative_to(ROOT / ".venv")]  # third-party deps only
    assert leaks == [], leaks
    assert not [h for h in seen["hooks"] if "editable" in h.lower()], seen["hooks"]


def test_installed_help_and_the_guides_it_cites(installed):
    edgeport = installed["dir"] / "bin" / "edgeport"
    top = _run([edgeport, "--help"], installed["env"], installed["cwd"])
    assert top.returncode == 0 and top.stdout.startswith("usage: edgeport"), top.stderr[-2000:]
    module = _run([installed["python"], "-m", "exporter", "--help"], installed["env"], installed["cwd"])
    assert module.returncode == 0 and "export" in module.stdout and "targets" in module.stdout, module.stderr
    # Every subcommand's help, from the installed package, with every guide path it cites.
    probe = (
        "import json; from exporter.cli import build_parser; import argparse; p = build_parser(); "
        "sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)); "
        "print(json.dumps({name: parser.format_help() for name, parser in sub.choices.items()}))"
    )
    proc = _run([installed["python"], "-c", probe], installed["env"], installed["cwd"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    helps = {"edgeport": top.stdout, **json.loads(proc.stdout)}
    assert {"export", "bench", "targets", "suggest"} <= set(helps)
    cited = {m for text in helps.values() for m in re.findall(r"(\S*docs/[\w.-]+\.md)", text)}
    assert len(cited) >= 3, cited  # firmware.md, android.md, edgetpu.md at least
    for path in cited:
        assert Path(path).is_absolute() and Path(path).is_relative_to(installed["dir"]), path
        assert Path(path).is_file() and Path(path).stat().st_size > 500, path


def test_installed_cli_exports_a_tiny_model_for_cortex_m4_and_android(installed, tiny_keras_path):
    work = installed["cwd"]
    shutil.copy(tiny_keras_path, work / "model.keras")
    np.savez(work / "calib.npz", x=np.random.default_rng(0).random((40, 16, 16, 1), dtype=np.float32))
    cmd = [installed["dir"] / "bin" / "edgeport", "export", "model.keras", "--target", "cortex-m4,android-arm64"]
    cmd += ["--format", "tflite", "--calib", "calib.npz:x", "--calib-samples", "40", "-o", "out", "--quiet"]
    proc = _run(cmd, installed["env"], work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for name in MCU_FILES + ("model_settings.h", "model.mk"):
        assert (work / "out" / "cortex-m4" / name).is_file(), name
    for name in ("model_int8.tflite", "report.json", "report.md"):
        assert (work / "out" / "android-arm64" / name).is_file(), name
    for target in ("cortex-m4", "android-arm64"):
        report = json.loads((work / "out" / target / "report.json").read_text())
        assert report["verdict"] == "ok" and report["target"] == target, report["verdict"]
        assert report["verification"]["fully_integer"] is True
    assert "g_model" in (work / "out" / "cortex-m4" / "model_data.cc").read_text()
