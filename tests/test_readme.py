"""README.md stays true: its Python code runs as written, and its ``edgeport`` commands exist.

The ```python blocks are executed exactly as written, in order and in one namespace, from a folder holding
the files they name (a small ``model.keras``, ``calib.npz``). Every ``edgeport`` line of a fenced block, and
every inline ```edgeport ...``` span, must parse: the subcommand and every flag it names exist (synopsis
lines such as ``[--runs N]`` are checked flag by flag). The commands that are cheap on a tiny model run for real.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import quiet_keras, run_cli

from exporter.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: Characters that mark a synopsis line (placeholders, alternatives) rather than a command to run.
_SYNOPSIS = re.compile(r"[\[\]|]|\.\.\.")


def _fenced(lang: str | None = None) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block, optionally only those of ``lang``."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        if lang is None or m.group(1) == lang:
            blocks.append((text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2)))
    return blocks


def _commands() -> list[tuple[str, str]]:
    """(where, command) for every README line of a fenced block, or inline code span, that starts with edgeport."""
    found = []
    for line_no, lang, code in _fenced():
        if lang == "python":
            continue
        for offset, line in enumerate(code.splitlines()):
            if line.strip().startswith("edgeport"):
                found.append((f"README.md:{line_no + offset}", re.sub(r"\s+#.*$", "", line.strip())))
    text = README.read_text(encoding="utf-8")
    for m in re.finditer(r"(?<!`)`(edgeport(?: [^`]*)?)`(?!`)", text):
        found.append((f"README.md:{text.count(chr(10), 0, m.start()) + 1} (inline)", m.group(1)))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = _commands()


def test_readme_names_commands_and_python_code():
    assert len(COMMANDS) >= 25
    assert len(_fenced("python")) >= 1


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_readme_command_parses(where, command, capsys):
    parser = build_parser()
    subs = _subparsers(parser)
    words = command.split()
    if _SYNOPSIS.search(command) or len(words) == 1 or (len(words) == 2 and words[1] in subs):
        # A synopsis (or a bare subcommand name): the subcommand and every flag it shows must exist.
        sub = words[1] if len(words) > 1 and not words[1].startswith("-") else None
        assert sub is None or sub in subs, f"{where}: unknown subcommand {sub!r}"
        known = set(parser._option_string_actions) | (set(subs[sub]._option_string_actions) if sub else set())
        flags = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", command)
        missing = [f for f in flags if f not in known]
        assert not missing, f"{where}: {command!r} names options that do not exist: {missing}"
        return
    try:
        args = parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # --help / --version print and exit 0; a usage error exits 2
        assert exc.code == 0 and {"--help", "-h", "--version"} & set(words), f"{where}: {command!r} does not parse"
        return
    assert args.command == words[1]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory) -> Path:
    """A folder with the files the README's examples name, all small: one 3-class 16x16 CNN and its data."""
    keras = quiet_keras()
    from PIL import Image

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((400, 16, 16, 1), dtype=np.float32)
    y = np.digitize(x.mean(axis=(1, 2, 3)), np.quantile(x.mean(axis=(1, 2, 3)), [1 / 3, 2 / 3])).astype(np.int64)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(3, activation="softmax", name="classifier"),
        ],
        name="readme_cnn",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:300], y[:300], epochs=2, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("readme")
    model.save(folder / "model.keras")
    for name in ("teacher.keras", "student.keras", "ad.keras"):
        shutil.copy(folder / "model.keras", folder / name)
    np.savez(folder / "calib.npz", x=x[:300])
    np.savez(folder / "train.npz", x=x[:300], y=y[:300])
    np.savez(folder / "eval.npz", x=x[300:], y=y[300:])
    (folder / "calib_images").mkdir()
    for i in range(8):
        Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8), mode="L").save(folder / "calib_images" / f"{i}.png")
    return folder


def test_readme_python_api_runs_as_written(readme_dir, monkeypatch, capsys):
    import exporter
    from exporter.benchmark import BenchmarkResult
    from exporter.verify import Verification

    monkeypatch.chdir(readme_dir)
    namespace: dict = {"__name__": "__readme__"}
    for line_no, _, code in _fenced("python"):
        exec(compile(code, f"README.md:{line_no}", "exec"), namespace)  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    assert "cortex-m4" in out and "edgetpu" in out  # print(result.summary())
    result = namespace["result"]
    assert result.exit_code == 0, out
    assert namespace["report"].verdict == "ok"
    assert (readme_dir / "build" / "edgetpu" / "model_int8.tflite").is_file()
    assert isinstance(namespace["check"], Verification) and namespace["check"].target == "cortex-m7"
    assert namespace["check"].fully_integer and namespace["check"].ok
    assert namespace["source"].inputs[0].shape[1:] == (16, 16, 1)
    assert namespace["memory"] is not None and namespace["profile"].name == "cortex-m7"
    assert namespace["exporter"] is exporter
    # The README's exporter.benchmark call ran for real: run it again to look at the result it returns.
    bench = exporter.benchmark(namespace["tflite"], "cortex-m4", runs=2)
    assert isinstance(bench, BenchmarkResult)


#: README commands that run in a few seconds on the tiny model, and the file each must write.
RUNS = {
    "edgeport targets": None,
    "edgeport targets show cortex-m7": None,
    "edgeport compress model.keras --prune 0.5 --train train.npz:x,y --epochs 2 --eval eval.npz:x,y -o pruned.keras": (
        "pruned.keras"
    ),
    "edgeport compress model.keras --cluster 16 --train train.npz:x,y --epochs 1 -o clustered.keras": "clustered.keras",
    "edgeport compress ad.keras --lowrank energy=0.9 --train train.npz:x,y -o ad_lowrank.keras": "ad_lowrank.keras",
    "edgeport compress model.keras --qat --train train.npz:x,y --epochs 1 --target cortex-m4 -o model_qat.keras": (
        "model_qat.keras"
    ),
    "edgeport compress student.keras --distill-from teacher.keras --train train.npz:x,y --eval eval.npz:x,y "
    "--epochs 10": None,
    "edgeport compress teacher.keras --distill-from teacher.keras --student-width 0.5 --train train.npz:x,y "
    "-o student.keras": "student.keras",
    # The README's export commands are only parsed here: each takes 25-40 s (every target, ONNX); the Python
    # API test above runs a real two-target export, and tests/test_export.py the rest.
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUNS), ids=[c.split(" -")[0] for c in RUNS])
def test_readme_command_runs_on_a_tiny_model(command, readme_dir, monkeypatch, capsys):
    assert command in {c for _, c in COMMANDS}, f"{command!r} is no longer in the README: update RUNS"
    monkeypatch.chdir(readme_dir)
    run = run_cli(capsys, *shlex.split(command)[1:])
    assert run.code == 0, run.err[-2000:]
    if RUNS[command]:
        assert (readme_dir / RUNS[command]).is_file(), run.out[-2000:]
