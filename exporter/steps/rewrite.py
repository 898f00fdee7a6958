"""Changes to the loaded model before calibration and conversion: what --edgetpu-compat, --prune and
--cluster --train do to a copy of the Keras model (the input file is never touched).

Each records what it did in ``source.notes``, which every target's report carries.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import CalibrationDataError, UsageError
from ..load.model import SourceModel
from ..options import ExportOptions
from ..progress import Progress

log = logging.getLogger(__name__)


def apply_edgetpu_compat(source: SourceModel) -> None:
    """--edgetpu-compat: replace activations the Edge TPU cannot map (GELU, hard-swish) with ReLU6."""
    if source.keras_model is None:
        raise UsageError(
            "--edgetpu-compat rewrites Keras layers; it needs a .keras or .h5 model.", hint="Drop the flag."
        )
    from ..devices.edgetpu import edgetpu_compat_fixes

    source.keras_model, changes = edgetpu_compat_fixes(source.keras_model)
    source.layers = {layer.name: type(layer).__name__ for layer in source.keras_model.layers} | source.layers
    source.notes.extend(f"--edgetpu-compat: {change}" for change in changes)


def apply_cluster(source: SourceModel, opts: ExportOptions, progress: Progress) -> None:
    """--cluster K --train DATA: K shared values per kernel, fine-tuned, before conversion; the int8 step
    then keeps them (at most K values per channel) instead of choosing values no training has seen."""
    if source.keras_model is None:
        raise UsageError("--cluster with --train fine-tunes Keras weights; it needs a .keras or .h5 model.")
    from ..compress import ClusterSpec, cluster_model
    from ..compress.api import load_labelled

    pre = preprocessing_options(opts)
    train = load_labelled(opts.train, source.inputs, opts.train_samples, opts.seed, "Training", **pre)
    progress.step("cluster", f"{opts.cluster} shared values per kernel, fine-tuned {opts.epochs} epoch(s)")
    source.keras_model, report = cluster_model(
        source.keras_model, ClusterSpec(clusters=opts.cluster), train=train, epochs=opts.epochs, seed=opts.seed
    )
    source.notes.append(f"--cluster {opts.cluster} --train: {report.summary()} (the input file is unchanged)")


def apply_prune(source: SourceModel, opts: ExportOptions, progress: Progress) -> None:
    """--prune: prune (and with --train fine-tune) a copy of the loaded Keras model before calibration."""
    if source.keras_model is None:
        raise UsageError("--prune rewrites Keras weights; it needs a .keras or .h5 model.", hint="Drop --prune.")
    from ..compress import PruneSpec, prune_model
    from ..compress.api import load_labelled

    spec = PruneSpec.parse(opts.prune) if isinstance(opts.prune, str) else opts.prune
    pre = preprocessing_options(opts)
    train = None
    if spec.train:
        train = load_labelled(spec.train, source.inputs, spec.train_samples, spec.seed, "Training", **pre)
    evaluation = None
    if opts.eval is not None:
        try:
            evaluation = load_labelled(opts.eval, source.inputs, opts.eval_samples, opts.seed + 1, "Evaluation", **pre)
        except CalibrationDataError as exc:  # unlabelled --eval: prune anyway, without accuracy per step
            log.info("pruning accuracy not measured: %s", exc)
    progress.step("prune", spec.describe())
    source.keras_model, pruned = prune_model(
        source.keras_model, spec, train=train, eval=evaluation, verbose=progress.enabled
    )
    source.pruning = pruned.to_dict()  # read by _attach_sparsity for every target's report
    source.reference_cache.clear()  # float outputs of the unpruned model are not the reference any more
    source.notes.append(f"--prune: {spec.describe()} (the input file is unchanged)")


def preprocessing_options(opts: ExportOptions) -> dict[str, Any]:
    """How training/evaluation image folders are scaled: as the calibration data is (--input-range, --mean/--std)."""
    return {"input_range": opts.input_range, "mean": list(opts.mean or []) or None, "std": list(opts.std or []) or None}
