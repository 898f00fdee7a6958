"""``edgeport export``: a Keras model to verified full-int8 TFLite for one or more targets."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..guides import doc
from ..options import LUT_MODES, ExportOptions, parse_bytes, parse_floats, parse_shape


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a model to verified full-int8 TFLite for targets",
        description="Load MODEL (.keras, .h5, SavedModel dir or .tflite), calibrate, convert to full-integer int8, "
        "verify every op and dtype against each target, and write model_int8.tflite, report.json and report.md.",
    )
    parser.add_argument(
        "model", help="model file: .keras, legacy .h5, SavedModel directory, or an int8 .tflite to re-check"
    )
    parser.add_argument(
        "-t", "--target", default="all", help="target name, comma list, 'all', or a profile .toml (default: all)"
    )
    parser.add_argument("-o", "--output", type=Path, help="output directory (default: edgeport-out/<model>/<target>/)")
    parser.add_argument(
        "--force", action="store_true", help="write the model even when it does not fit or is not supported"
    )
    cal = parser.add_argument_group("calibration")
    cal.add_argument(
        "--calib", help="representative data: .npy, .npz[:key], image folder, module:function, or 'synthetic'"
    )
    cal.add_argument(
        "--calib-samples", type=int, default=200, help="samples to use (seeded random subset; default 200)"
    )
    cal.add_argument("--seed", type=int, default=0, help="seed for the sample subset (default 0)")
    cal.add_argument("--input-range", help="image scaling: 0,1 | -1,1 | 0,255")
    cal.add_argument("--mean", help="per-channel mean subtracted from 0..255 image pixels, e.g. 127.5")
    cal.add_argument("--std", help="per-channel std dividing image pixels after --mean, e.g. 127.5")
    ev = parser.add_argument_group("evaluation (float vs int8 on held-out data)")
    ev.add_argument(
        "--eval", help="held-out data, same forms as --calib; labels via data.npz:x,y, labels.txt or class sub-folders"
    )
    ev.add_argument("--eval-samples", type=int, default=1000, help="evaluation samples to use (default 1000)")
    ev.add_argument(
        "--allow-overlap",
        action="store_true",
        help="let evaluation reuse calibration samples (by default they are disjoint)",
    )
    ev.add_argument(
        "--per-layer", action="store_true", help="measure the error of every layer (on by default with --eval)"
    )
    gd = parser.add_argument_group("accuracy guard (tries fallbacks, exits 3 when none passes)")
    gd.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="PP",
        help="largest allowed accuracy drop, percentage points (needs labels)",
    )
    gd.add_argument(
        "--min-agreement",
        type=float,
        metavar="PCT",
        help="smallest allowed top-1 agreement with the float model, percent",
    )
    mdl = parser.add_argument_group("model")
    mdl.add_argument("--input-shape", help="static input shape for models with dynamic dims, e.g. 1,96,96,3")
    mdl.add_argument(
        "--unsafe", action="store_true", help="allow Lambda layers and custom code in .keras files (safe_mode off)"
    )
    q = parser.add_argument_group("quantization")
    q.add_argument(
        "--io-dtype", choices=["int8", "uint8", "float32"], help="input/output dtype (default: the target's)"
    )
    q.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight quantization")
    q.add_argument(
        "--cluster",
        type=int,
        metavar="K",
        help="keep at most K int8 values per output channel of every weight tensor a lookup table shrinks "
        "(chosen after quantization, fitted to each layer's output on the calibration data; with --train, K "
        "shared values per kernel are fine-tuned first); TFLite Micro targets store them as ceil(log2 K)-bit "
        "lookup-table indices",
    )
    fmt = parser.add_argument_group("formats")
    fmt.add_argument("--format", help="tflite, onnx or tflite,onnx (default: the target's; android-arm64 writes both)")
    fmt.add_argument("--onnx-opset", type=int, default=17, help="ONNX opset (default 17)")
    fmt.add_argument("--onnx-dynamic-batch", action="store_true", help="ONNX with a dynamic batch dimension")
    fmt.add_argument(
        "--onnx-calibrate",
        choices=["minmax", "entropy", "percentile"],
        default="minmax",
        help="int8 ONNX calibration method",
    )
    fmt.add_argument(
        "--gzip",
        action="store_true",
        help="also write model_int8.tflite.gz, the smallest gzip zlib makes (OTA/download size; sparse models gain most)",
    )
    # Group titles are printed unwrapped, so the guide's path stays whole (help texts wrap mid-path).
    dev = parser.add_argument_group(f"device (phones over adb: see {doc('android.md')})")
    dev.add_argument(
        "--bench", action="store_true", help="time each written model through the target's interpreter on this host"
    )
    dev.add_argument("--bench-runs", type=int, help="benchmark runs (default: the target's)")
    dev.add_argument(
        "--bench-device", metavar="adb[:SERIAL]", help="also run benchmark_model on a phone/emulator (android-arm64)"
    )
    dev.add_argument("--benchmark-binary", type=Path, help="benchmark_model for the device ABI (guide: android.md)")
    dev.add_argument(
        "--edgetpu-compat",
        action="store_true",
        help="replace GELU/hard-swish activations with ReLU6 so the Edge TPU maps them",
    )
    fw = parser.add_argument_group(f"firmware (Cortex-M, Ethos-U targets; see {doc('firmware.md')})")
    fw.add_argument("--c-name", help="C name of the model array (default g_model; macros MODEL_*, RegisterModelOps)")
    fw.add_argument(
        "--depfile", type=Path, metavar="FILE", help="write a make dependency file (model, calibration data, profile)"
    )
    fw.add_argument(
        "--dense-quant",
        choices=["auto", "per-channel", "per-tensor"],
        default="auto",
        help=f"Dense weight quantization on MCUs; auto: weighs arena, flash and fidelity (default; {doc('firmware.md')})",
    )
    fw.add_argument(
        "--arena-margin", type=float, default=10.0, metavar="PCT", help="margin over the measured arena (default 10)"
    )
    fw.add_argument(
        "--lut",
        choices=LUT_MODES,
        default="auto",
        help="TFLite Micro lookup-table compression of weights (DECODE ops; saves flash, decoded weights use arena "
        "RAM); auto: when the weights are clustered (--cluster, or a model 'edgeport compress --cluster' wrote)",
    )
    fw.add_argument(
        "--lut-max-decoded",
        metavar="BYTES",
        help="keep tensors whose decoded weights exceed BYTES as plain int8 (e.g. 16K): DECODE writes a whole "
        "tensor into the arena before its op runs, so this caps the RAM LUT compression adds, at some flash",
    )
    fw.add_argument(
        "--keep-zero-points",
        action="store_true",
        help="TFLite Micro files keep one zero point per channel, so LiteRT also loads them; by default each "
        "per-channel tensor stores its (all-equal) zero point once: 8 B per channel less flash",
    )
    fw.add_argument("--flash-budget", metavar="BYTES", help="override the profile's flash budget, e.g. 1M or 524288")
    fw.add_argument("--ram-budget", metavar="BYTES", help="override the profile's RAM budget, e.g. 256K")
    from .compress_cmd import add_prune_arguments

    add_prune_arguments(parser.add_argument_group("pruning (prune after load, then convert; see 'edgeport compress')"))
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines and no 'edgeport: warning:' lines (the warnings stay in report.json and report.md)",
    )
    parser.set_defaults(run=run)


#: Warnings already on the terminal when the export ends, not printed twice: the shared ONNX failure
#: (logged by exporter.steps.onnx as it happens, even with --quiet) and --unsafe (said before loading).
_ALREADY_SHOWN = ("ONNX not written: ", "Loaded with --unsafe: ")


def _shown(line: str) -> bool:
    """True for a warning line (maybe prefixed ``target, target: ``) that was already printed."""
    return any(line.startswith(p) or f": {p}" in line for p in _ALREADY_SHOWN)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import export
    from ..progress import Progress
    from ..report.terminal import export_warning_lines
    from .compress_cmd import spec_from_args

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
        per_layer=args.per_layer,
        max_accuracy_drop=args.max_accuracy_drop,
        min_agreement=args.min_agreement,
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        input_range=args.input_range,
        mean=parse_floats(args.mean, "--mean") if args.mean else None,
        std=parse_floats(args.std, "--std") if args.std else None,
        io_dtype=args.io_dtype,
        per_channel=False if args.per_tensor else None,
        unsafe=args.unsafe,
        formats=tuple(f.strip() for f in args.format.split(",") if f.strip()) if args.format is not None else None,
        onnx_opset=args.onnx_opset,
        onnx_dynamic_batch=args.onnx_dynamic_batch,
        onnx_calibrate=args.onnx_calibrate,
        gzip=args.gzip,
        bench=args.bench,
        bench_runs=args.bench_runs,
        bench_device=args.bench_device,
        benchmark_binary=args.benchmark_binary,
        edgetpu_compat=args.edgetpu_compat,
        force=args.force,
        keep_workdir=args.debug,
        prune=spec_from_args(args),
        cluster=args.cluster,
        # --train serves --cluster's fine-tuning and the accuracy guard's last remedy (QAT)
        train=args.train
        if args.cluster or args.max_accuracy_drop is not None or args.min_agreement is not None
        else None,
        train_samples=args.train_samples,
        epochs=args.epochs,
        lut=args.lut,
        lut_max_decoded=parse_bytes(args.lut_max_decoded, "--lut-max-decoded") if args.lut_max_decoded else None,
        keep_zero_points=args.keep_zero_points,
        c_name=args.c_name,
        depfile=args.depfile,
        dense_quant=args.dense_quant,
        arena_margin=args.arena_margin / 100.0,
        flash_budget=parse_bytes(args.flash_budget, "--flash-budget") if args.flash_budget else None,
        ram_budget=parse_bytes(args.ram_budget, "--ram-budget") if args.ram_budget else None,
    )
    progress = Progress(enabled=not args.quiet)
    result = export(args.model, target=args.target, options=options, progress=progress)
    progress.warnings(line for line in export_warning_lines(result.reports, result.common) if not _shown(line))
    print(result.summary())
    for report in result.reports:
        for reason in report.reasons:
            print(f"{report.target}: {reason}", file=sys.stderr)
        print(f"{report.target}: {report.output_dir}", file=sys.stderr)
        layout = (report.extra.get("flash_packing") or {}).get("layout")
        if layout:
            print(f"{report.target}: {layout}", file=sys.stderr)
    return result.exit_code
