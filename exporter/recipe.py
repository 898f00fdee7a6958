"""Recipes: an ordered list of compression steps with an accuracy guard checked after every step.

``edgeport run recipe.toml``. The whole recipe is validated before anything runs (unknown key or
step, bad value, missing file: one line naming the key, exit 2), because a typo found after twenty
minutes of fine-tuning wastes the twenty minutes. Every step writes its artifact into its own
numbered folder and ``recipe_report.json`` is rewritten after each step, so a run stopped by the
guard (exit 3) keeps everything made so far, with the measured numbers that stopped it.

Format (paths are relative to the recipe file)::

    model = "model.keras"
    output_dir = "recipe_out"            # default: <recipe name>_out beside the recipe
    seed = 0
    [data]
    train = "train.npz:x,y"              # labelled; needed by fine-tuning and distillation
    eval = "eval.npz:x,y"                # labelled; the guard measures top-1 on it
    calib = "calib.npz:x"                # for export
    [guard]
    max_accuracy_drop = 2.0              # percentage points below the original model, after every step
    [[step]]
    kind = "prune"                       # prune | distill | lowrank | cluster | qat | export
    sparsity = "50%"
"""

from __future__ import annotations

import json
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputModelError, NotSupportedError, UsageError
from .load.precheck import precheck_model
from .recipe_steps import compress_step

log = logging.getLogger(__name__)

#: step kind -> option -> accepted Python types (checked before anything runs).
STEP_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "prune": {
        "sparsity": (str, float, int),
        "epochs": (int,),
        "rounds": (int,),
        "scope": (str,),
        "skip": (list,),
        "batch_size": (int,),
        "learning_rate": (float,),
        "train_samples": (int,),
    },
    "distill": {
        "teacher": (str,),
        "student_width": (float, int),
        "temperature": (float, int),
        "alpha": (float, int),
        "epochs": (int,),
        "batch_size": (int,),
        "learning_rate": (float,),
    },
    "lowrank": {"rank": (int,), "energy": (float, int), "skip": (list,), "epochs": (int,), "learning_rate": (float,)},
    "cluster": {"clusters": (int,), "epochs": (int,), "skip": (list,), "learning_rate": (float,)},
    "qat": {"epochs": (int,), "per_tensor": (bool,), "dense_quant": (str,), "learning_rate": (float,)},
    "export": {"targets": (list, str), "calib_samples": (int,)},
}
TOP_KEYS = {"model", "output_dir", "seed", "data", "guard", "step"}
DATA_KEYS = {"train", "eval", "calib"}
GUARD_KEYS = {"max_accuracy_drop"}


@dataclass
class Step:
    index: int
    kind: str
    options: dict[str, Any]
    spec: Any = None  # the validated spec object (PruneSpec, LowRankSpec, ...)

    @property
    def label(self) -> str:
        return f"{self.index:02d}_{self.kind}"


@dataclass
class Recipe:
    path: Path
    model: Path
    output_dir: Path
    steps: list[Step]
    data: dict[str, str] = field(default_factory=dict)
    max_accuracy_drop: float | None = None
    seed: int = 0


def _fail(recipe: Path, key: str, message: str, hint: str | None = None) -> UsageError:
    ended = message if message.rstrip().endswith((".", "?", "!")) or hint is None else f"{message}."
    return UsageError(f"{recipe.name}: {key}: {ended}", hint=hint)


def _resolve_data(base: Path, spec: str) -> str:
    """Make a data spec's file part relative to the recipe (``file.npz:x,y`` keeps its selector)."""
    path, sep, rest = spec.partition(":")
    if sep and len(path) == 1:  # a Windows drive letter is not a selector
        path, rest, sep = spec, "", ""
    resolved = Path(path) if Path(path).is_absolute() else base / path
    return f"{resolved}{sep}{rest}"


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Parse and validate a recipe; every error names the key it is about."""
    from .compress.cluster import ClusterSpec
    from .compress.distill import DistillSpec
    from .compress.lowrank import LowRankSpec
    from .compress.spec import PruneSpec
    from .profiles import load_profiles

    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"Recipe {path} does not exist.", hint="Pass the path of a .toml recipe (see examples/recipes/)."
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path.name}: not valid TOML: {exc}.",
            hint="Fix the syntax at the line and column shown (examples/recipes/ has working recipes).",
        ) from exc
    base = path.parent
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(path, key, "unknown key", hint=f"Top-level keys: {', '.join(sorted(TOP_KEYS))}.")
    if not isinstance(raw.get("model"), str):
        raise _fail(
            path,
            "model",
            "required: the path of the Keras model to compress (relative to the recipe)",
            hint='Add model = "model.keras" at the top of the recipe.',
        )
    model = (base / raw["model"]).resolve() if not Path(raw["model"]).is_absolute() else Path(raw["model"])
    if not model.exists():
        raise _fail(
            path, "model", f"file {model} does not exist", hint="Check the path: it is relative to the recipe file."
        )
    precheck_model(model)  # an empty or broken model file fails 'run --check' too, in milliseconds
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        raise _fail(path, "seed", f"must be an integer; received {seed!r}")
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise _fail(path, "data", "must be a table ([data])")
    resolved: dict[str, str] = {}
    for key, value in data.items():
        if key not in DATA_KEYS:
            raise _fail(path, f"data.{key}", "unknown key", hint=f"Data keys: {', '.join(sorted(DATA_KEYS))}.")
        if not isinstance(value, str):
            raise _fail(path, f"data.{key}", f"must be a data spec string (file.npz:x,y); received {value!r}")
        resolved[key] = _resolve_data(base, value)
        file_part = Path(resolved[key].partition(":")[0] if ":" in resolved[key][2:] else resolved[key])
        if not file_part.exists():
            raise _fail(
                path, f"data.{key}", f"file {file_part} does not exist", hint="Paths are relative to the recipe file."
            )
    guard = raw.get("guard", {})
    if not isinstance(guard, dict):
        raise _fail(path, "guard", "must be a table ([guard])")
    for key in guard:
        if key not in GUARD_KEYS:
            raise _fail(
                path, f"guard.{key}", "unknown key", hint="The guard takes max_accuracy_drop (percentage points)."
            )
    drop = guard.get("max_accuracy_drop")
    if drop is not None and (not isinstance(drop, int | float) or isinstance(drop, bool) or drop < 0):
        raise _fail(path, "guard.max_accuracy_drop", f"must be a number >= 0 (percentage points); received {drop!r}")
    if drop is not None and "eval" not in resolved:
        raise _fail(
            path, "guard.max_accuracy_drop", "needs labelled evaluation data", hint='Add data.eval = "file.npz:x,y".'
        )
    raw_steps = raw.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail(
            path, "step", "the recipe needs at least one [[step]]", hint=f"Step kinds: {', '.join(STEP_OPTIONS)}."
        )
    steps = []
    for index, raw_step in enumerate(raw_steps, start=1):
        where = f"step[{index}]"
        kind = raw_step.get("kind")
        if kind not in STEP_OPTIONS:
            raise _fail(path, f"{where}.kind", f"unknown step {kind!r}", hint=f"Step kinds: {', '.join(STEP_OPTIONS)}.")
        options = {k: v for k, v in raw_step.items() if k != "kind"}
        allowed = STEP_OPTIONS[kind]
        for key, value in options.items():
            if key not in allowed:
                raise _fail(
                    path, f"{where}.{key}", f"unknown option for a {kind} step", hint=f"Options: {', '.join(allowed)}."
                )
            if (isinstance(value, bool) and bool not in allowed[key]) or not isinstance(value, allowed[key]):
                names = " or ".join(t.__name__ for t in allowed[key])
                raise _fail(path, f"{where}.{key}", f"must be {names}; received {value!r}")
        step = Step(index, kind, options)
        try:
            step.spec = _spec(
                step, seed, resolved, base, PruneSpec, DistillSpec, LowRankSpec, ClusterSpec, load_profiles
            )
        except UsageError as exc:
            raise _fail(path, f"{where} ({kind})", str(exc)) from exc
        steps.append(step)
    if any(_needs_train(s) for s in steps) and "train" not in resolved:
        raise _fail(
            path, "data.train", "a step fine-tunes or distills but no training data is given", hint="Add data.train."
        )
    if any(s.kind == "export" for s in steps) and "calib" not in resolved:
        raise _fail(path, "data.calib", "an export step needs calibration data", hint='Add data.calib = "file.npz:x".')
    out = raw.get("output_dir")
    if out is not None and not isinstance(out, str):
        raise _fail(path, "output_dir", f"must be a path string; received {out!r}")
    output_dir = (base / out) if out else base / f"{path.stem}_out"
    return Recipe(path, model, output_dir.resolve(), steps, resolved, None if drop is None else float(drop), seed)


def _needs_train(step: Step) -> bool:
    if step.kind in ("distill", "qat"):
        return True
    return (
        step.kind in ("prune", "lowrank", "cluster")
        and int(step.options.get("epochs", 1 if step.kind != "lowrank" else 0)) > 0
    )


def _spec(step, seed, data, base, PruneSpec, DistillSpec, LowRankSpec, ClusterSpec, load_profiles) -> Any:
    o = step.options
    if step.kind == "prune":
        fields = {
            k: o[k] for k in ("epochs", "rounds", "scope", "batch_size", "learning_rate", "train_samples") if k in o
        }
        if "skip" in o:
            fields["skip"] = tuple(o["skip"])
        train = data.get("train") if int(o.get("epochs", 2)) > 0 else None
        if train is None:  # epochs = 0: one-shot pruning, no fine-tuning
            fields.pop("epochs", None)
        return PruneSpec.parse(str(o.get("sparsity", "50%")), train=train, seed=seed, **fields)
    if step.kind == "distill":
        teacher = o.get("teacher", "original")
        if teacher != "original" and not (base / teacher).exists():
            raise UsageError(
                f"teacher file {base / teacher} does not exist.",
                hint='Use "original" or a path relative to the recipe.',
            )
        width = o.get("student_width")
        if width is not None and not 0 < float(width) <= 4:
            raise UsageError(f"student_width must be in (0, 4]; received {width}.")
        fields = {k: o[k] for k in ("temperature", "alpha", "epochs", "batch_size", "learning_rate") if k in o}
        return DistillSpec(seed=seed, **fields)
    if step.kind == "lowrank":
        if ("rank" in o) == ("energy" in o):
            raise UsageError("give exactly one of rank or energy.")
        return LowRankSpec(
            rank=o.get("rank"), energy=None if "energy" not in o else float(o["energy"]), skip=tuple(o.get("skip", ()))
        )
    if step.kind == "cluster":
        return ClusterSpec(clusters=int(o.get("clusters", 16)), skip=tuple(o.get("skip", ())))
    if step.kind == "qat":
        from .compress.qat import QatSpec

        dense = o.get("dense_quant", "per-channel")
        if dense not in ("per-channel", "per-tensor"):
            raise UsageError(f"dense_quant must be per-channel or per-tensor; received {dense!r}.")
        return QatSpec(
            epochs=int(o.get("epochs", 2)), learning_rate=float(o["learning_rate"]) if "learning_rate" in o else None,
            per_tensor=bool(o.get("per_tensor", False)), dense_per_tensor=dense == "per-tensor", seed=seed,
        )  # fmt: skip
    targets = o.get("targets", [])
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise UsageError("targets: name at least one target (edgeport targets lists them).")
    return [p.name for p in load_profiles(",".join(targets))]


# --- running -------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    step: str
    kind: str
    accuracy: float | None
    drop_pp: float | None
    params: int | None
    artifacts: list[str]
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    guard_ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "drop_pp": None if self.drop_pp is None else round(self.drop_pp, 2),
            "params": self.params,
            "artifacts": self.artifacts,
            "seconds": round(self.seconds, 1),
            "guard_ok": self.guard_ok,
            "detail": self.detail,
        }


@dataclass
class RecipeResult:
    recipe: str
    baseline_accuracy: float | None
    max_accuracy_drop: float | None
    steps: list[StepResult] = field(default_factory=list)
    stopped_at: str | None = None
    message: str | None = None
    accuracy_how: str | None = None

    @property
    def exit_code(self) -> int:
        return NotSupportedError.exit_code if self.stopped_at else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "baseline_accuracy": None if self.baseline_accuracy is None else round(self.baseline_accuracy, 4),
            "max_accuracy_drop_pp": self.max_accuracy_drop,
            "accuracy_how": self.accuracy_how,
            "steps": [s.to_dict() for s in self.steps],
            "stopped_at": self.stopped_at,
            "message": self.message,
        }

    def summary(self) -> str:
        lines = []
        if self.baseline_accuracy is not None:
            lines.append(f"original model: accuracy {self.baseline_accuracy:.2%} ({self.accuracy_how})")
        for s in self.steps:
            acc = "" if s.accuracy is None else f"accuracy {s.accuracy:.2%} (drop {s.drop_pp:+.2f} pp)"
            params = "" if s.params is None else f"{s.params:,} params, "
            mark = "" if s.guard_ok else "  <- guard broken"
            lines.append(f"{s.step}: {params}{acc}, {s.seconds:.0f} s -> {', '.join(s.artifacts)}{mark}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def run_recipe(recipe: Recipe | str | os.PathLike[str], *, progress: Any = None, verbose: bool = False) -> RecipeResult:
    """Run every step in order; stop (exit code 3 in the result) at the first step that breaks the guard."""
    from .calibrate import load_calibration
    from .compress.finetune import accuracy
    from .load import load_model
    from .progress import Progress
    from .tfimport import import_tensorflow_quietly

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    progress = progress or Progress(enabled=False)
    precheck_model(recipe.model)  # a broken file is refused before the TensorFlow import
    import_tensorflow_quietly(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    source = load_model(recipe.model)
    if source.keras_model is None:
        raise InputModelError(f"Recipes compress Keras models (.keras, .h5); {recipe.model.name} is a {source.format}.")
    original = source.keras_model

    def labelled(key: str, samples: int) -> tuple[np.ndarray, np.ndarray] | None:
        if key not in recipe.data:
            return None
        data = load_calibration(recipe.data[key], source.inputs, samples=samples, seed=recipe.seed, with_labels=True)
        return np.asarray(data.arrays[0], dtype=np.float32), np.asarray(data.labels)

    train = labelled("train", 60000) if any(_needs_train(s) for s in recipe.steps) else None
    evaluation = labelled("eval", 10000)
    result = RecipeResult(str(recipe.path), None, recipe.max_accuracy_drop)
    if evaluation is not None:
        result.baseline_accuracy = accuracy(original, *evaluation)
        result.accuracy_how = (
            f"top-1 on {len(evaluation[0])} labelled evaluation samples (float Keras; int8 LiteRT after export)"
        )
    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    current, current_path = original, recipe.model
    for step in recipe.steps:
        progress.step(step.kind, f"step {step.index}/{len(recipe.steps)}")
        started = time.perf_counter()
        folder = recipe.output_dir / step.label
        problem = None
        if step.kind == "export":
            outcome, problem = _export(step, current_path, recipe, folder, evaluation)
        else:
            current, detail = compress_step(step, current, original, recipe, train, verbose)
            current_path = folder / "model.keras"
            from .compress.api import save_keras_atomically

            save_keras_atomically(current, current_path)
            acc = accuracy(current, *evaluation) if evaluation is not None else None
            outcome = (acc, int(current.count_params()), [str(current_path)], detail)
        acc, params, artifacts, detail = outcome
        drop = None if acc is None or result.baseline_accuracy is None else (result.baseline_accuracy - acc) * 100.0
        ok = recipe.max_accuracy_drop is None or drop is None or drop <= recipe.max_accuracy_drop
        result.steps.append(
            StepResult(step.label, step.kind, acc, drop, params, artifacts, time.perf_counter() - started, detail, ok)
        )
        if not ok:
            problem = (
                f"Guard broken at {step.label}: accuracy {acc:.2%} is {drop:.2f} pp below the original "
                f"{result.baseline_accuracy:.2%}; max_accuracy_drop is {recipe.max_accuracy_drop:g} pp. "
                f"Stopped; artifacts so far are kept in {recipe.output_dir}."
            )
        if problem is not None:
            result.stopped_at, result.message = step.label, problem
        _write_report(recipe, result)
        if problem is not None:
            break
    progress.done()
    return result


def _write_report(recipe: Recipe, result: RecipeResult) -> None:
    from .atomic import write_text

    write_text(recipe.output_dir / "recipe_report.json", json.dumps(result.to_dict(), indent=2) + "\n")


def _export(step, model_path, recipe, folder, evaluation) -> tuple[tuple, str | None]:
    """Export to every target; the guard sees the worst int8 accuracy among them (measured with LiteRT).

    A target that cannot run the model is not an error of the recipe but its result: the step is
    recorded with each target's reasons, and the message stops the run (exit 3) like a broken guard.
    """
    from .compress.finetune import class_labels
    from .pipeline import MODEL_FILE, export
    from .report.report import all_warnings

    samples = int(step.options.get("calib_samples", 200))
    result = export(
        model_path, step.spec, recipe.data["calib"], output_dir=folder, calib_samples=samples, seed=recipe.seed
    )
    artifacts, detail, worst = [], {}, None
    for report in result.reports:
        out = result.output_dirs[report.target]
        artifacts.append(str(out))
        entry = {
            "verdict": report.verdict,
            "model_bytes": report.model_bytes,
            "reasons": report.reasons,
            "warnings": all_warnings(report, result.common),  # as in its report.json; 'edgeport run' prints them
        }
        model_file = out / MODEL_FILE
        if evaluation is not None and model_file.exists():
            outputs = _int8_outputs(model_file.read_bytes(), evaluation[0])
            acc = float(np.mean(outputs.argmax(axis=-1) == class_labels(evaluation[1])))
            entry["int8_accuracy"] = round(acc, 4)
            entry["accuracy_how"] = (
                f"measured (host, {_runtime_for(model_file.read_bytes())}), int8 model on the evaluation data"
            )
            worst = acc if worst is None else min(worst, acc)
        detail[report.target] = entry
    problem = None
    if result.exit_code:
        problem = (
            f"Export step {step.label} is not supported: "
            + "; ".join(f"{t}: {', '.join(d['reasons'][:2])}" for t, d in detail.items() if d["reasons"])
            + f". Stopped; the reports are in {folder}."
        )
    return (worst, None, artifacts, detail), problem


def _runtime_for(model: bytes) -> str:
    from .convert.compact import tflm_only

    return "LiteRT" if tflm_only(model) is None else "TFLite Micro, its flash layout"


def _int8_outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    """The first output on ``x``: LiteRT, or TFLite Micro for a file in its flash layout, in a child either way."""
    from .analyze.litert_child import run_tflite_in_child

    if _runtime_for(model) == "LiteRT":
        return run_tflite_in_child(model, [x])[0]
    from .compress.lut_check import tflm_outputs

    return tflm_outputs(model, list(x))[0]
