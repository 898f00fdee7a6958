"""``prune_model()`` (a Keras model in, a pruned copy out) and ``compress()`` (a model file in, a .keras out).

The input model is never modified: pruning works on a clone. Accuracy is measured (float, Keras) on
the evaluation data before pruning and after every step, so the report shows what each step cost.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationDataError, OutputPathError, UsageError
from ..progress import Progress
from .spec import PruneSpec

log = logging.getLogger(__name__)

Data = tuple[np.ndarray, np.ndarray]


@dataclass
class PruneStep:
    step: str
    sparsity: float
    accuracy: float | None = None
    params: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sparsity": round(self.sparsity, 4),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "params": self.params,
            "detail": self.detail,
        }


@dataclass
class PruneReport:
    """What was pruned, what was left alone and why, and accuracy after every step."""

    spec: PruneSpec
    pruned_layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    steps: list[PruneStep] = field(default_factory=list)
    channels: dict[str, list[int]] = field(default_factory=dict)  # conv -> [filters before, after]
    accuracy_how: str | None = None
    output: str | None = None

    @property
    def dense_accuracy(self) -> float | None:
        return self.steps[0].accuracy if self.steps else None

    @property
    def final_accuracy(self) -> float | None:
        return self.steps[-1].accuracy if self.steps else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "pruned_layers": list(self.pruned_layers),
            "skipped": dict(self.skipped),
            "channels": {k: list(v) for k, v in self.channels.items()},
            "steps": [s.to_dict() for s in self.steps],
            "accuracy_how": self.accuracy_how,
            "output": self.output,
        }

    def summary(self) -> str:
        lines = [self.spec.describe()]
        if self.pruned_layers:
            lines.append(f"pruned: {', '.join(self.pruned_layers)}")
        for name, why in self.skipped.items():
            lines.append(f"left dense: {name} ({why})")
        for name, (before, after) in self.channels.items():
            lines.append(f"{name}: {before} -> {after} filters")
        for s in self.steps:
            facts = [] if self.spec.method == "channels" else [f"{s.sparsity:.1%} zeros"]
            facts += [f"{s.params:,} params"] if s.params is not None else []
            facts += [f"accuracy {s.accuracy:.2%}"] if s.accuracy is not None else []
            lines.append(f"{s.step}: {', '.join(facts)}" + (f" ({s.detail})" if s.detail else ""))
        if self.accuracy_how:
            lines.append(f"accuracy: {self.accuracy_how}")
        elif self.steps:
            lines.append("accuracy: not measured (pass --eval DATA with labels)")
        if self.output:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


def prune_model(
    model: Any,
    spec: PruneSpec | str,
    *,
    train: Data | None = None,
    eval: Data | None = None,
    verbose: bool = False,
) -> tuple[Any, PruneReport]:
    """A pruned copy of the Keras ``model`` and the report; ``model`` itself is left untouched.

    ``train`` (x, labels) enables fine-tuning (gradual pruning, masks held); ``eval`` (x, labels) is
    where accuracy is measured after every step.
    """
    import keras

    from . import finetune
    from .prune import kernel_sparsity, select_targets

    spec = PruneSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.train is not None and train is None:
        raise UsageError(
            "The prune spec names training data that was not loaded.", hint="Use compress() or pass train=(x, y)."
        )
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    report = PruneReport(spec=spec)
    if eval is not None:
        report.accuracy_how = f"float Keras model, top-1 on {len(eval[0])} labelled evaluation samples"

    def measure(current: Any) -> float | None:
        return finetune.accuracy(current, *eval) if eval is not None else None

    if spec.method == "channels":
        work = _prune_channels(work, spec, report, train, measure, verbose)
    else:
        kinds = ("Conv1D", "Conv2D", "Dense") if spec.method == "n:m" else None
        targets, skipped = select_targets(work, spec, kinds) if kinds else select_targets(work, spec)
        report.skipped.update(skipped)
        if spec.method == "n:m":
            from .prune import nm_masks

            _, unfit = nm_masks(targets, spec.n, spec.m)
            report.skipped.update(unfit)
            targets = [t for t in targets if t.name not in unfit]
        if not targets:
            raise UsageError(
                "Nothing to prune: every Conv/Dense layer is skipped.",
                hint="Pass --prune-all to also prune the first conv and the classifier, or shorten --prune-skip.",
            )
        report.pruned_layers = [t.name for t in targets]
        report.steps.append(PruneStep("dense", kernel_sparsity(targets), measure(work), _params(work)))
        _prune_masks(work, targets, spec, report, train, measure, verbose)
    final = keras.models.clone_model(work)  # drop the optimizer state fine-tuning left behind
    final.set_weights(work.get_weights())
    return final, report


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''}"


def _params(model: Any) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def _prune_masks(work, targets, spec, report, train, measure, verbose) -> None:
    from . import finetune
    from .prune import apply_masks, kernel_sparsity, masks_for, polynomial_sparsity, round_targets

    if train is None:
        apply_masks(targets, masks_for(targets, spec))
        report.steps.append(
            PruneStep("one-shot prune", kernel_sparsity(targets), measure(work), detail="no fine-tuning")
        )
        return
    x, y = train
    steps = finetune.steps_per_epoch(len(x), spec.batch_size) * spec.epochs
    goals = round_targets(spec.sparsity, spec.rounds) if spec.method == "magnitude" else [spec.sparsity] * spec.rounds
    previous = 0.0
    for index, goal in enumerate(goals, start=1):
        if spec.method == "magnitude":
            # Ramp over the first half of the round, updating every ~1/10 of the ramp; hold for the rest.
            ramp_end = max(1, steps // 2)
            every = max(1, ramp_end // 10)
            start = previous

            def update(step: int, start=start, goal=goal, ramp_end=ramp_end, every=every):
                if step > ramp_end or step % every:
                    return None
                return masks_for(targets, spec, polynomial_sparsity(step, 0, ramp_end, start, goal))

            if start > 0.0:
                masks = masks_for(targets, spec, start)
            else:
                masks = {t.name: np.ones(tuple(t.kernel.shape), dtype=bool) for t in targets}
        else:
            masks, update = masks_for(targets, spec), None
        label = f"round {index}/{spec.rounds}" if spec.rounds > 1 else "prune + fine-tune"
        loss = finetune.fine_tune(
            work, x, y, epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate,
            targets=targets, masks=masks, update=update, verbose=verbose, seed=spec.seed + index,
        )  # fmt: skip
        # The schedule ends exactly on the goal: apply its final masks (a no-op when already there).
        apply_masks(targets, masks_for(targets, spec, goal))
        report.steps.append(
            PruneStep(label, kernel_sparsity(targets), measure(work), detail=f"{_epochs(spec.epochs)}, loss {loss:.4f}")
        )
        previous = goal


def _prune_channels(work, spec, report, train, measure, verbose):
    from . import finetune
    from .channels import apply_plan, plan_channels
    from .prune import round_targets, select_targets

    targets, skipped = select_targets(work, spec, ("Conv2D",))
    report.skipped.update(skipped)
    names = [t.name for t in targets]
    if not names:
        raise UsageError(
            "Nothing to channel-prune: no Conv2D layer is left after the skips.",
            hint="Pass --prune-all to include the first conv, or shorten --prune-skip.",
        )
    report.steps.append(PruneStep("dense", 0.0, measure(work), _params(work)))
    original = {layer.name: int(layer.filters) for layer in work.layers if layer.name in names}
    goals = round_targets(spec.sparsity, spec.rounds) if train is not None else [spec.sparsity]
    for index, goal in enumerate(goals, start=1):
        current = {layer.name: int(layer.filters) for layer in work.layers if layer.name in names}
        # Each round removes filters so that the total removed reaches ``goal`` of the original count.
        ratios = {n: 1.0 - max(1, round(original[n] * (1.0 - goal))) / current[n] for n in current}
        plan = None
        for name, ratio in ratios.items():
            if ratio <= 0:
                continue
            step_plan = plan_channels(work, [name], ratio)
            report.skipped.update(step_plan.skipped)
            if step_plan.kept:
                work = apply_plan(work, step_plan)
                plan = step_plan
        if plan is None and index == 1:
            raise UsageError(
                "Channel pruning found no conv whose filters can be removed: "
                + "; ".join(f"{k}: {v}" for k, v in report.skipped.items() if k in names),
                hint="Use unstructured pruning (--prune 0.5) for this model.",
            )
        label = f"round {index}/{len(goals)}" if len(goals) > 1 else "remove filters"
        report.steps.append(PruneStep(label, 0.0, measure(work), _params(work)))
        if train is not None:
            loss = finetune.fine_tune(
                work, *train, epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate,
                verbose=verbose, seed=spec.seed + index,
            )  # fmt: skip
            report.steps.append(
                PruneStep(
                    f"{label}: fine-tune", 0.0, measure(work), _params(work), f"{_epochs(spec.epochs)}, loss {loss:.4f}"
                )
            )
    by_name = {layer.name: layer for layer in work.layers}
    report.pruned_layers = [n for n in names if n in by_name and int(by_name[n].filters) < original[n]]
    report.channels = {n: [original[n], int(by_name[n].filters)] for n in report.pruned_layers}
    return work


# --- files ----------------------------------------------------------------------------------------------


def load_labelled(spec: str, inputs: list, samples: int, seed: int, what: str, **preprocessing: Any) -> Data:
    """(x, integer labels) from a data spec (.npz:x,y, image folders with class sub-folders, ...).

    ``preprocessing``: ``input_range`` / ``mean`` / ``std`` for image folders, as for calibration.
    """
    from ..calibrate import load_calibration

    data = load_calibration(spec, inputs, samples=samples, seed=seed, with_labels=True, **preprocessing)
    if len(data.arrays) != 1:
        raise CalibrationDataError(
            f"{what} data for pruning supports single-input models; this model has {len(data.arrays)}."
        )
    return data.arrays[0], np.asarray(data.labels)


def compress(
    model: str | os.PathLike[str],
    prune: PruneSpec | str,
    *,
    output: str | os.PathLike[str] | None = None,
    train: str | Data | None = None,
    eval: str | Data | None = None,
    eval_samples: int = 1000,
    progress: Progress | None = None,
    verbose: bool = False,
    **spec_fields: Any,
) -> PruneReport:
    """Prune the model file ``model`` and write the result as a .keras file (atomically; never over the input).

    ``prune`` is a :class:`PruneSpec` or its ``--prune`` text (``0.5``, ``2:4``, ``channels:0.5``);
    ``spec_fields`` are PruneSpec fields (``epochs=``, ``rounds=``, ``scope=``, ``skip=``...).
    """
    from ..load import load_model, precheck_model
    from ..tfimport import import_tensorflow_quietly

    progress = progress or Progress(enabled=False)
    source_path = Path(model)
    if not source_path.exists():
        from ..errors import InputModelError

        raise InputModelError(f"Model file {source_path} does not exist.", hint="Check the path.")
    if isinstance(train, str):
        spec_fields.setdefault("train", train)
    elif train is not None:
        spec_fields.setdefault("train", "arrays")
    spec = PruneSpec.parse(prune, **spec_fields) if isinstance(prune, str) else prune
    out = Path(output) if output is not None else source_path.with_name(f"{source_path.stem}_pruned.keras")
    _check_output(out, source_path)
    if precheck_model(source_path) == "tflite":  # a broken or non-Keras file is refused before the TF import
        raise UsageError(
            f"Pruning needs a Keras model (.keras or .h5); {source_path.name} is a .tflite file.", hint=KERAS_MODEL_HINT
        )
    progress.step("load", "importing TensorFlow")
    import_tensorflow_quietly(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    progress.step("load", f"loading {source_path.name}")
    source = load_model(source_path)
    if source.keras_model is None:
        raise UsageError(
            f"Pruning needs a Keras model (.keras or .h5); {source_path.name} is a {source.format}.",
            hint=KERAS_MODEL_HINT,
        )
    train_data = _data(train, source, spec.train_samples, spec.seed, "Training") if train is not None else None
    eval_data = _data(eval, source, eval_samples, spec.seed + 1, "Evaluation") if eval is not None else None
    progress.step("prune", spec.describe())
    pruned, report = prune_model(source.keras_model, spec, train=train_data, eval=eval_data, verbose=verbose)
    progress.step("write", f"saving {out}")
    save_keras_atomically(pruned, out)
    report.output = str(out)
    progress.done()
    return report


KERAS_MODEL_HINT = "Pass the .keras or .h5 the model was exported from, then export the compressed result again."


def _data(value: str | Data, source: Any, samples: int, seed: int, what: str) -> Data:
    if isinstance(value, str):
        return load_labelled(value, source.inputs, samples, seed, what)
    x, y = value
    return np.asarray(x, dtype=np.float32), np.asarray(y)


def _check_output(out: Path, source: Path) -> None:
    if out.suffix.lower() != ".keras":
        raise OutputPathError(f"The pruned model is saved as .keras; received -o {out}.", hint="Pass -o NAME.keras.")
    if out.resolve() == source.resolve():
        raise OutputPathError(
            f"The output {out} is the input model itself; edgeport never overwrites its input.",
            hint="Choose another file with -o.",
        )
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"Output directory {parent} is not writable.", hint="Choose a writable -o.")


def save_keras_atomically(model: Any, out: Path) -> None:
    """Save to a temporary .keras beside ``out``, then rename: ``out`` is never half-written."""
    from ..atomic import ensure_dir

    ensure_dir(out.parent if str(out.parent) else Path("."))
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
