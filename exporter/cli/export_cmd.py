"""``edgeport export``: a Keras model to verified full-int8 TFLite for one or more targets."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..options import ExportOptions, parse_floats, parse_shape


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a model to verified full-int8 TFLite for targets",
        description="Load MODEL (.keras, .h5, SavedModel dir or .tflite), calibrate, convert to full-integer int8, "
        "verify every op and dtype against each target, and write model_int8.tflite, report.json and report.md.",
    )
    parser.add_argument("model", help="model file: .keras, legacy .h5, SavedModel directory, or an int8 .tflite to re-check")
    parser.add_argument("-t", "--target", default="all", help="target name, comma list, 'all', or a profile .toml (default: all)")
    parser.add_argument("-o", "--output", type=Path, help="output directory (default: edgeport-out/<model>/<target>/)")
    parser.add_argument("--force", action="store_true", help="write the model even when it does not fit or is not supported")
    cal = parser.add_argument_group("calibration")
    cal.add_argument("--calib", help="representative data: .npy, .npz[:key], image folder, module:function, or 'synthetic'")
    cal.add_argument("--calib-samples", type=int, default=200, help="samples to use (seeded random subset; default 200)")
    cal.add_argument("--seed", type=int, default=0, help="seed for the sample subset (default 0)")
    cal.add_argument("--input-range", help="image scaling: 0,1 | -1,1 | 0,255")
    cal.add_argument("--mean", help="per-channel mean subtracted from 0..255 image pixels, e.g. 127.5")
    cal.add_argument("--std", help="per-channel std dividing image pixels after --mean, e.g. 127.5")
    ev = parser.add_argument_group("evaluation (float vs int8 on held-out data)")
    ev.add_argument("--eval", help="held-out data, same forms as --calib; labels via data.npz:x,y, labels.txt or class sub-folders")
    ev.add_argument("--eval-samples", type=int, default=1000, help="evaluation samples to use (default 1000)")
    ev.add_argument(
        "--allow-overlap", action="store_true", help="let evaluation reuse calibration samples (by default they are disjoint)"
    )
    mdl = parser.add_argument_group("model")
    mdl.add_argument("--input-shape", help="static input shape for models with dynamic dims, e.g. 1,96,96,3")
    mdl.add_argument("--unsafe", action="store_true", help="allow Lambda layers and custom code in .keras files (safe_mode off)")
    q = parser.add_argument_group("quantization")
    q.add_argument("--io-dtype", choices=["int8", "uint8", "float32"], help="input/output dtype (default: the target's)")
    q.add_argument(
        "--per-tensor", action="store_true", help="per-tensor instead of per-channel weight quantization"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import export
    from ..progress import Progress

    if args.unsafe:
        logging.getLogger("exporter").warning("--unsafe: safe_mode is off; code inside the model file may run.")
    options = ExportOptions(
        output_dir=args.output,
        calib=args.calib,
        calib_samples=args.calib_samples,
        seed=args.seed,
        eval=args.eval,
        eval_samples=args.eval_samples,
        allow_overlap=args.allow_overlap,
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        input_range=args.input_range,
        mean=parse_floats(args.mean, "--mean") if args.mean else None,
        std=parse_floats(args.std, "--std") if args.std else None,
        io_dtype=args.io_dtype,
        per_channel=False if args.per_tensor else None,
        unsafe=args.unsafe,
        force=args.force,
        keep_workdir=args.debug,
    )
    progress = Progress(enabled=not args.quiet)
    result = export(args.model, target=args.target, options=options, progress=progress)
    print(result.summary())
    for report in result.reports:
        for reason in report.reasons:
            print(f"{report.target}: {reason}", file=sys.stderr)
        print(f"{report.target}: {report.output_dir}", file=sys.stderr)
    return result.exit_code
