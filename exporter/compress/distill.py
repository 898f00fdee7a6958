"""Knowledge distillation for Keras 3: a small student learns from a teacher's softened outputs.

Loss (Hinton et al. 2015, as in the Keras distillation example): ``alpha * CE(labels, student)
+ (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))``. The T^2 keeps the soft term's
gradients on the same scale whatever the temperature.

The teacher's soft targets are computed once, before training, instead of running the teacher at
every step: with no augmentation this is the same loss, costs one teacher pass instead of one per
epoch, and works for any backend. Models that end in softmax are handled by taking log-probabilities
as logits (softmax(log p / T) is exactly the tempered distribution), so any student/teacher pair
with the same number of classes works, whatever their last activation.

When the student already holds exact zeros (it was pruned), those zeros are held through training,
so "prune, then distill" keeps the sparsity it paid for.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError

log = logging.getLogger(__name__)

#: A kernel with at least this fraction of exact zeros is treated as pruned: its zeros are held.
PRUNED_FRACTION = 0.1


@dataclass(frozen=True)
class DistillSpec:
    temperature: float = 4.0
    alpha: float = 0.1
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UsageError(
                f"--temperature must be > 0; received {self.temperature}.", hint="Pass 2..10 (4 is typical)."
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(
                f"--alpha (weight of the hard-label loss) must be in [0, 1]; received {self.alpha}.", hint="Pass 0.1."
            )
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1; received {self.epochs}.")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1; received {self.batch_size}.")

    def describe(self) -> str:
        return (
            f"distillation: temperature {self.temperature:g}, alpha {self.alpha:g} (hard-label weight), "
            f"{self.epochs} epochs"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "description": self.describe(),
        }


@dataclass
class DistillReport:
    spec: DistillSpec
    teacher_params: int = 0
    student_params: int = 0
    teacher_accuracy: float | None = None
    student_alone_accuracy: float | None = None
    distilled_accuracy: float | None = None
    held_zeros: list[str] = field(default_factory=list)
    loss: float | None = None
    accuracy_how: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "spec": self.spec.to_dict(),
            "teacher_params": self.teacher_params,
            "student_params": self.student_params,
            "teacher_accuracy": r(self.teacher_accuracy),
            "student_alone_accuracy": r(self.student_alone_accuracy),
            "distilled_accuracy": r(self.distilled_accuracy),
            "held_zeros": list(self.held_zeros),
            "loss": r(self.loss),
            "accuracy_how": self.accuracy_how,
        }

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "not measured" if v is None else f"{v:.2%}"

        ratio = self.student_params / self.teacher_params if self.teacher_params else 0.0
        lines = [
            self.spec.describe(),
            f"teacher: {self.teacher_params:,} params, accuracy {pct(self.teacher_accuracy)}",
            f"student: {self.student_params:,} params ({ratio:.0%} of the teacher)",
            f"student trained alone (same data, epochs, seed): accuracy {pct(self.student_alone_accuracy)}",
            f"distilled student: accuracy {pct(self.distilled_accuracy)}",
        ]
        if self.held_zeros:
            lines.append(f"pruned zeros held in: {', '.join(self.held_zeros)}")
        lines.append(f"accuracy: {self.accuracy_how or 'not measured (pass --eval DATA with labels)'}")
        return "\n".join(lines)


def logits_of(outputs: np.ndarray) -> np.ndarray:
    """Logits from a model's outputs: log-probabilities when they are a softmax, the values otherwise."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return np.log(np.clip(outputs, 1e-7, 1.0))
    return outputs


def _loss(student_probabilities: bool, temperature: float, alpha: float, classes: int):
    """Keras loss over y = [one-hot labels | teacher logits]; the student's output is y_pred."""
    from keras import ops

    def distillation_loss(y_true, y_pred):
        hard, teacher = y_true[:, :classes], y_true[:, classes:]
        student = ops.log(ops.clip(y_pred, 1e-7, 1.0)) if student_probabilities else y_pred
        hard_loss = -ops.sum(hard * ops.log_softmax(student, axis=-1), axis=-1)
        soft_teacher = ops.softmax(teacher / temperature, axis=-1)
        soft_loss = ops.sum(
            soft_teacher
            * (ops.log(ops.clip(soft_teacher, 1e-12, 1.0)) - ops.log_softmax(student / temperature, axis=-1)),
            axis=-1,
        )
        return alpha * hard_loss + (1.0 - alpha) * (temperature**2) * soft_loss

    return distillation_loss


def _zero_masks(model: Any) -> list[tuple[Any, np.ndarray]]:
    from .prune import flat_layers

    held = []
    for layer in flat_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        values = np.asarray(kernel.numpy())
        zeros = values == 0
        if zeros.mean() >= PRUNED_FRACTION:
            held.append((layer, ~zeros))
    return held


def train_student(
    student: Any,
    x: np.ndarray,
    y: np.ndarray,
    spec: DistillSpec,
    *,
    teacher_logits: np.ndarray | None = None,
    verbose: bool = False,
) -> tuple[float, list[str]]:
    """Train ``student`` in place: distilled when ``teacher_logits`` are given, on labels alone otherwise.

    Returns (last epoch's loss, layers whose pruned zeros were held). Both modes share everything
    (seed, optimizer, batches) so "distilled vs alone" compares only the loss.
    """
    import keras

    from .finetune import class_labels, outputs_probabilities

    keras.utils.set_random_seed(spec.seed)
    labels = class_labels(y)
    classes = int(student.output_shape[-1])
    if labels.max(initial=0) >= classes:
        raise UsageError(f"Labels go up to {labels.max()} but the student has {classes} outputs.")
    probabilities = outputs_probabilities(student, x)
    hard = np.eye(classes, dtype=np.float32)[labels]
    alpha = spec.alpha if teacher_logits is not None else 1.0
    teacher = teacher_logits if teacher_logits is not None else np.zeros_like(hard)
    targets = np.concatenate([hard, np.asarray(teacher, dtype=np.float32)], axis=1)
    student.compile(
        optimizer=keras.optimizers.Adam(spec.learning_rate), loss=_loss(probabilities, spec.temperature, alpha, classes)
    )
    held = _zero_masks(student)
    callbacks = []
    if held:

        class HoldZeros(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                for layer, keep in held:
                    layer.kernel.assign(np.where(keep, layer.kernel.numpy(), 0.0).astype(np.float32))

        callbacks.append(HoldZeros())
    stream = contextlib.redirect_stdout(sys.stderr) if verbose else contextlib.nullcontext()
    with stream:
        history = student.fit(
            x, targets, epochs=spec.epochs, batch_size=spec.batch_size, shuffle=True,
            verbose=1 if verbose else 0, callbacks=callbacks,
        )  # fmt: skip
    return float((history.history.get("loss") or [float("nan")])[-1]), [layer.name for layer, _ in held]


def distill(
    student: Any,
    teacher: Any,
    train: tuple[np.ndarray, np.ndarray],
    *,
    spec: DistillSpec | None = None,
    eval: tuple[np.ndarray, np.ndarray] | None = None,
    compare_alone: bool = True,
    verbose: bool = False,
) -> tuple[Any, DistillReport]:
    """A distilled copy of ``student`` (``student`` itself is untouched) and the report.

    With ``compare_alone``, a second copy of the same student is trained on labels alone with the
    same data, epochs and seed, so the report shows what distillation itself bought.
    """
    from .finetune import accuracy

    spec = spec or DistillSpec()
    x, y = np.asarray(train[0], dtype=np.float32), np.asarray(train[1])
    t_out, s_out = teacher.output_shape, student.output_shape
    if isinstance(t_out, list) or isinstance(s_out, list) or t_out[-1] != s_out[-1]:
        raise UsageError(
            f"Distillation needs a teacher and student with the same single output; teacher gives {t_out}, student {s_out}.",
            hint="Use a student with the teacher's number of classes (or --student-width to derive one).",
        )
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        raise UsageError(
            f"Teacher and student take different inputs: {teacher.input_shape} vs {student.input_shape}.",
            hint="Distillation feeds both the same samples.",
        )
    report = DistillReport(
        spec=spec, teacher_params=int(teacher.count_params()), student_params=int(student.count_params())
    )
    if eval is not None:
        report.accuracy_how = f"float Keras models, top-1 on {len(eval[0])} labelled evaluation samples"
        report.teacher_accuracy = accuracy(teacher, *eval)

    def fresh() -> Any:
        return uncompiled_copy(student)

    teacher_logits = logits_of(teacher.predict(x, batch_size=256, verbose=0))
    if compare_alone:
        alone = fresh()
        train_student(alone, x, y, spec, verbose=verbose)
        if eval is not None:
            report.student_alone_accuracy = accuracy(alone, *eval)
    distilled = fresh()
    report.loss, report.held_zeros = train_student(
        distilled, x, y, spec, teacher_logits=teacher_logits, verbose=verbose
    )
    if eval is not None:
        report.distilled_accuracy = accuracy(distilled, *eval)
    return uncompiled_copy(distilled), report  # no optimizer state, no custom loss in the saved file


def uncompiled_copy(model: Any) -> Any:
    """Same architecture and weights, never compiled (clone_model would carry the compile config over)."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy
