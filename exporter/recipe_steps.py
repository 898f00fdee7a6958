"""The compression steps a recipe runs (exporter.recipe validates them and drives the run)."""

from __future__ import annotations

from typing import Any


def compress_step(
    step: Any, current: Any, original: Any, recipe: Any, train: Any, verbose: bool
) -> tuple[Any, dict[str, Any]]:
    """Run one compression step of a recipe on ``current``: the new model and the step's report as a dict."""
    if step.kind == "prune":
        from .compress.api import prune_model

        model, report = prune_model(
            current, step.spec, train=train if step.spec.train else None, eval=None, verbose=verbose
        )
        return model, report.to_dict()
    if step.kind == "distill":
        from .compress.distill import distill

        teacher_name = step.options.get("teacher", "original")
        if teacher_name == "original":
            teacher = original
        else:
            from .load import load_model

            teacher = load_model(recipe.path.parent / teacher_name).keras_model
        student = current
        if "student_width" in step.options:
            from .compress.student import scale_width

            student = scale_width(current, float(step.options["student_width"]), seed=recipe.seed)
        model, report = distill(
            student, teacher, train, spec=step.spec, eval=None, compare_alone=False, verbose=verbose
        )
        return model, report.to_dict()
    if step.kind == "lowrank":
        from .compress.lowrank import factorize

        calib = train[0][:500] if train is not None else None
        model, report = factorize(current, step.spec, calib=calib)
        epochs = int(step.options.get("epochs", 0))
        if epochs > 0:
            from .compress.finetune import fine_tune

            fine_tune(model, *train, epochs=epochs, batch_size=64, learning_rate=float(step.options.get("learning_rate", 2e-4)),
                      verbose=verbose, seed=recipe.seed)  # fmt: skip
            from .compress.distill import uncompiled_copy

            model = uncompiled_copy(model)
        return model, report.to_dict()
    if step.kind == "qat":
        from .compress.qat import quantization_aware_training

        model, report = quantization_aware_training(current, train, step.spec, verbose=verbose)
        return model, report.to_dict()
    from .compress.cluster import cluster_model

    epochs = int(step.options.get("epochs", 2))
    model, report = cluster_model(
        current, step.spec, train=train if epochs > 0 else None, epochs=max(epochs, 1),
        learning_rate=float(step.options.get("learning_rate", 2e-4)), seed=recipe.seed, verbose=verbose,
    )  # fmt: skip
    return model, report.to_dict()
