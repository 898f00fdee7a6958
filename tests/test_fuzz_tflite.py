"""Seeded fuzzing of the .tflite reader: 300 damaged copies of three real int8 models.

Bit flips, overwritten runs, truncations, retargeted 32-bit offsets and header bytes, the damage a
bad copy, a partial download or a hostile user produces. Every entry point that reads a .tflite must
end each one cleanly: an :class:`EdgeportError` (on the CLI one line and exit 2/3), never another
exception, never exit 1, never a crash of this process, and never success on a file that LiteRT's
own loader rejects (the oracle below asks LiteRT directly, not through edgeport).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cli_helpers import run_cli

import exporter
from exporter.errors import EdgeportError

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "models"
SOURCES = (
    ASSETS / "mlperf_tiny" / "visual_wake_words" / "vww_96_int8.tflite",
    ASSETS / "tflm" / "hello_world" / "hello_world_int8.tflite",
    ASSETS / "edgetpu_pairs" / "mnist9_edgetpu.tflite",
)
MUTANTS_PER_MODEL = 100
BENCHMARKED_PER_PATH = 24  # of the mutants LiteRT loads: each benchmark is a child process (~0.2 s)

pytestmark = [
    pytest.mark.skipif(not ASSETS.is_dir(), reason="needs ../shared/assets (real .tflite models)"),
    pytest.mark.filterwarnings("ignore"),
]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One kind of damage, chosen and placed by ``rng``."""
    b = bytearray(data)
    kind = rng.choice(("flip", "overwrite", "truncate", "offset", "header"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        at, n = rng.randrange(len(b)), rng.randint(1, 16)
        b[at : at + n] = bytes(rng.randrange(256) for _ in range(n))[: len(b) - at]
    elif kind == "truncate":
        b = b[: rng.randrange(8, len(b))]
    elif kind == "offset":  # the flatbuffer's tables and vectors live in the first few KB of offsets
        at = rng.randrange(0, min(len(b) - 4, 4096)) & ~3
        value = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(len(b)), len(b) + 4))
        b[at : at + 4] = value.to_bytes(4, "little")
    else:
        b[rng.randrange(8, min(len(b), 512))] = rng.randrange(256)
    return kind, bytes(b)


def litert_loads(data: bytes) -> bool:
    """The oracle: does LiteRT's loader (FlatBuffers verifier + interpreter builder) accept the file?"""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError):
        return False
    return True


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> list[tuple[Path, bool]]:
    folder = tmp_path_factory.mktemp("mutants")
    rng = random.Random(20261201)
    result = []
    for source in SOURCES:
        data = source.read_bytes()
        for i in range(MUTANTS_PER_MODEL):
            kind, damaged = mutate(data, rng)
            path = folder / f"{source.stem}_{i:03d}_{kind}.tflite"
            path.write_bytes(damaged)
            result.append((path, litert_loads(damaged)))
    rejected = sum(not ok for _, ok in result)
    assert 60 <= rejected <= len(result) - 60, f"the mutator should produce both kinds; {rejected} rejected"
    return result


def _outcome(call) -> str:
    """'ok', or 'exit N' for an EdgeportError; anything else fails the test with the mutant named."""
    try:
        call()
    except EdgeportError as exc:
        assert exc.exit_code != 1, f"internal error: {exc}"
        return f"exit {exc.exit_code}"
    return "ok"


@pytest.mark.parametrize("entry", ["TFLiteGraph.from_file", "verify", "estimate_memory", "analyze_edgetpu"])
def test_api_entry_points_end_every_mutant_cleanly(mutants, entry):
    calls = {
        "TFLiteGraph.from_file": lambda p: exporter.TFLiteGraph.from_file(p),
        "verify": lambda p: exporter.verify(p, "cortex-m4"),
        "estimate_memory": lambda p: exporter.estimate_memory(p),
        "analyze_edgetpu": lambda p: exporter.analyze_edgetpu(p),
    }
    for path, loads in mutants:
        try:
            outcome = _outcome(lambda p=path: calls[entry](p))
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"{path.name}: {entry} raised {type(exc).__name__}: {exc}") from exc
        if not loads:
            assert outcome == "exit 2", f"{path.name}: LiteRT rejects it but {entry} gave {outcome}"


def test_edgetpu_command_ends_every_mutant_in_one_line(mutants, capsys):
    for path, loads in mutants:
        run = run_cli(capsys, "edgetpu", path)
        lines = [line for line in run.err.splitlines() if line.strip()]
        assert run.code in (0, 2, 3), f"{path.name}: exit {run.code}: {run.err}"
        assert "Traceback" not in run.err and "internal error" not in run.err, f"{path.name}: {run.err}"
        if not loads:
            assert run.code == 2, f"{path.name}: LiteRT rejects it, edgeport said exit {run.code}"
            assert len(lines) == 1 and "corrupt TFLite flatbuffer" in lines[0], f"{path.name}: {run.err}"
            assert "copy it again" in lines[0], lines[0]


@pytest.mark.parametrize("target", ["cortex-m4", "android-arm64"])
def test_benchmark_paths_never_accept_what_litert_rejects(mutants, target):
    """Every rejected mutant (they fail before any child starts) and a seeded sample of the loadable ones
    (each one is a real benchmark child process; a native crash there must come back as exit 3)."""
    loadable = [m for m in mutants if m[1]]
    sample = [m for m in mutants if not m[1]] + random.Random(7).sample(loadable, BENCHMARKED_PER_PATH)
    for path, loads in sample:
        try:
            outcome = _outcome(lambda p=path: exporter.benchmark(p, target, runs=1, warmup=0))
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{path.name}: benchmark raised {type(exc).__name__}: {exc}") from exc
        if not loads:
            assert outcome == "exit 2", f"{path.name}: LiteRT rejects it but benchmark on {target} gave {outcome}"
