"""``edgeport compress``: prune a Keras model (unstructured, 2:4 or channel removal) and save a .keras file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_prune_arguments(group: Any, *, required: bool = False) -> None:
    """The pruning flags, shared with ``edgeport export --prune``."""
    group.add_argument(
        "--prune",
        metavar="SPARSITY",
        required=required,
        help="0.5 or 50%% (zero that fraction of weights), 2:4 (N:M along input channels) or channels:0.5 "
        "(remove that fraction of conv filters)",
    )
    group.add_argument(
        "--prune-scope", choices=["layer", "global"], default="layer", help="magnitude threshold per layer or global"
    )
    group.add_argument("--prune-skip", metavar="LAYERS", help="comma list of layers to leave dense")
    group.add_argument(
        "--prune-all",
        action="store_true",
        help="also prune the first conv and the classifier (left dense by default)",
    )
    group.add_argument(
        "--train", metavar="DATA", help="labelled training data for fine-tuning (data.npz:x,y, class folders, ...)"
    )
    group.add_argument(
        "--train-samples", type=int, default=60000, help="training samples to use (default: up to 60000)"
    )
    group.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per round (default 2)")
    group.add_argument("--rounds", type=int, default=1, help="prune -> retrain rounds (default 1; needs --train)")


def spec_from_args(args: argparse.Namespace) -> Any:
    """A PruneSpec from the parsed flags, or None when --prune was not given."""
    from ..compress.spec import PruneSpec

    if not args.prune:
        return None
    skip = tuple(s.strip() for s in (args.prune_skip or "").split(",") if s.strip())
    return PruneSpec.parse(
        args.prune,
        scope=args.prune_scope,
        skip=skip,
        default_skips=not args.prune_all,
        train=args.train,
        epochs=args.epochs,
        rounds=args.rounds,
        train_samples=args.train_samples,
        seed=getattr(args, "seed", 0) or 0,
    )


def qat_spec_from_args(args: argparse.Namespace) -> Any:
    """The QAT weight scheme: --per-tensor, --dense-quant, else what the --target's export would use."""
    from ..compress.qat import QatSpec
    from ..profiles import load_profile

    profile = load_profile(args.target) if args.target else None
    per_tensor = args.per_tensor or (profile is not None and not profile.quantization.per_channel)
    dense = args.dense_quant or ("per-tensor" if profile is not None and profile.is_mcu else "per-channel")
    if args.epochs < 1:
        from ..errors import UsageError

        raise UsageError(f"--epochs must be at least 1 for --qat; received {args.epochs}.")
    return QatSpec(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_tensor=per_tensor,
        dense_per_tensor=dense == "per-tensor",
        seed=args.seed,
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compress",
        help="compress a Keras model (prune, distill, low-rank, cluster, QAT) and save it as .keras",
        description="Prune MODEL (.keras or .h5, tfmot-pruned files included) and write a .keras file. "
        "Without --train it prunes one-shot; with --train it fine-tunes with the masks held. "
        "Accuracy is measured before and after every step when --eval has labels.",
    )
    parser.add_argument("model", help="Keras model: .keras or legacy .h5")
    parser.add_argument("-o", "--output", type=Path, help="output .keras (default: <model>_pruned.keras beside it)")
    group = parser.add_argument_group("pruning")
    add_prune_arguments(group)
    more = parser.add_argument_group("distillation, low-rank, clustering (applied after pruning, in this order)")
    more.add_argument(
        "--distill-from", metavar="TEACHER", help="teacher model (.keras/.h5) to distill into MODEL (needs --train)"
    )
    more.add_argument(
        "--student-width", type=float, help="derive the student from the teacher with this width multiplier (e.g. 0.5)"
    )
    more.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    more.add_argument("--alpha", type=float, default=0.1, help="weight of the hard-label loss (default 0.1)")
    more.add_argument(
        "--lowrank",
        metavar="RANK|energy=E",
        help="SVD-factorize Dense/Conv kernels to RANK, or keep energy E (e.g. energy=0.9)",
    )
    more.add_argument(
        "--cluster", type=int, metavar="K", help="k-means cluster every kernel to K shared values (e.g. 16)"
    )
    qat = parser.add_argument_group("quantization-aware training (last; needs --train)")
    qat.add_argument(
        "--qat",
        action="store_true",
        help="train with int8 weights and activations simulated as the target's kernels compute them; writes a "
        ".keras that 'edgeport export' converts with the trained ranges",
    )
    qat.add_argument(
        "--target",
        help="the target the model is for: its weight scheme (MCU targets: per-tensor Dense, the small-arena choice)",
    )
    qat.add_argument("--per-tensor", action="store_true", help="QAT with per-tensor weights everywhere")
    qat.add_argument(
        "--dense-quant",
        choices=("per-channel", "per-tensor"),
        help="QAT Dense weights per channel or per tensor (default: per-tensor for MCU targets, else per-channel)",
    )
    qat.add_argument("--learning-rate", type=float, help="QAT learning rate (default 1e-4)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval", help="labelled held-out data for accuracy before/after each step")
    ev.add_argument("--eval-samples", type=int, default=1000, help="evaluation samples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and fine-tuning (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..compress import compress
    from ..errors import UsageError
    from ..progress import Progress

    if args.distill_from or args.lowrank or args.cluster or args.qat:
        return run_techniques(args)
    if not args.prune:
        raise UsageError(
            "Nothing to do: pass --prune, --distill-from, --lowrank, --cluster or --qat.",
            hint="See 'edgeport compress --help'.",
        )
    spec = spec_from_args(args)
    progress = Progress(enabled=not args.quiet)
    report = compress(
        args.model,
        spec,
        output=args.output,
        train=args.train,
        eval=args.eval,
        eval_samples=args.eval_samples,
        progress=progress,
        verbose=not args.quiet,
    )
    print(report.summary())
    return 0


def run_techniques(args: argparse.Namespace) -> int:
    """Prune (optional) -> distill -> low-rank -> cluster, each reported, one .keras written at the end."""
    from ..compress.api import KERAS_MODEL_HINT, load_labelled, prune_model, save_keras_atomically
    from ..compress.cluster import cluster_model
    from ..compress.distill import DistillSpec, distill
    from ..compress.lowrank import LowRankSpec, factorize
    from ..compress.student import scale_width
    from ..errors import UsageError
    from ..load import load_model, precheck_model
    from ..progress import Progress
    from ..tfimport import import_tensorflow_quietly

    source_path = Path(args.model)
    out = args.output or source_path.with_name(f"{source_path.stem}_compressed.keras")
    if out.resolve() == source_path.resolve():
        raise UsageError(
            f"The output {out} is the input model; edgeport never overwrites its input.", hint="Pass another -o."
        )
    if args.distill_from and not args.train:
        raise UsageError("--distill-from needs labelled training data.", hint="Pass --train data.npz:x,y.")
    if args.qat and not args.train:
        raise UsageError("--qat needs labelled training data.", hint="Pass --train data.npz:x,y.")
    qat_spec = qat_spec_from_args(args) if args.qat else None
    lowrank = LowRankSpec.parse(args.lowrank) if args.lowrank else None
    distill_spec = (
        DistillSpec(temperature=args.temperature, alpha=args.alpha, epochs=args.epochs, seed=args.seed)
        if args.distill_from
        else None
    )
    for path in (source_path, args.distill_from):  # broken or non-Keras files are refused before the TF import
        if path is not None and precheck_model(path) == "tflite":
            raise UsageError(
                f"Compression needs Keras models (.keras or .h5); {Path(path).name} is a .tflite file.",
                hint=KERAS_MODEL_HINT,
            )
    progress = Progress(enabled=not args.quiet)
    progress.step("load", "importing TensorFlow")
    import_tensorflow_quietly()
    source = load_model(source_path)
    if source.keras_model is None:
        raise UsageError(
            f"Compression needs a Keras model (.keras or .h5); {source_path.name} is a {source.format}.",
            hint=KERAS_MODEL_HINT,
        )
    train = load_labelled(args.train, source.inputs, args.train_samples, args.seed, "Training") if args.train else None
    evaluation = (
        load_labelled(args.eval, source.inputs, args.eval_samples, args.seed + 1, "Evaluation") if args.eval else None
    )
    current = source.keras_model
    verbose = not args.quiet
    if args.prune:
        progress.step("prune", args.prune)
        current, report = prune_model(current, spec_from_args(args), train=train, eval=evaluation, verbose=verbose)
        print(report.summary())
    if distill_spec is not None:
        teacher = load_model(args.distill_from).keras_model
        student = scale_width(teacher, args.student_width, seed=args.seed) if args.student_width else current
        progress.step("distill", f"from {args.distill_from}")
        current, report = distill(
            student,
            teacher,
            train,
            spec=distill_spec,
            eval=evaluation,
            compare_alone=evaluation is not None,
            verbose=verbose,
        )
        print(report.summary())
    if lowrank is not None:
        progress.step("lowrank", args.lowrank)
        current, report = factorize(current, lowrank, calib=train[0][:500] if train is not None else None)
        print(report.summary())
    if args.cluster:
        progress.step("cluster", f"{args.cluster} centroids")
        current, report = cluster_model(
            current, args.cluster, train=train, eval=evaluation, epochs=args.epochs, seed=args.seed, verbose=verbose
        )
        print(report.summary())
    if qat_spec is not None:
        from ..compress.qat import quantization_aware_training

        progress.step("qat", f"{qat_spec.epochs} epochs")
        current, report = quantization_aware_training(current, train, qat_spec, eval=evaluation, verbose=verbose)
        print(report.summary())
    progress.step("write", f"saving {out}")
    save_keras_atomically(current, Path(out))
    progress.done()
    print(f"wrote {out}")
    return 0
