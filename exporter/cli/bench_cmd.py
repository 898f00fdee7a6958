"""``edgeport bench``: time a .tflite or .onnx model through each target's own interpreter on this host."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..guides import doc


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="time a model through a target's interpreter on this host (latency, memory, TFLM arena)",
        description="Run MODEL (.tflite or .onnx) through the interpreter each target uses — LiteRT with XNNPACK "
        "for phones, TFLite Micro for Cortex-M, onnxruntime for .onnx — in a child process, and print load time, "
        "latency statistics, peak memory and (TFLite Micro) the exact tensor arena. Host timings are not device timings.",
    )
    parser.add_argument("model", help="a .tflite model (e.g. edgeport export's model_int8.tflite) or an .onnx file")
    parser.add_argument(
        "-t", "--target", help="target name, comma list, 'all', or a profile .toml (required for .tflite)"
    )
    parser.add_argument("--runs", type=int, help="timed runs (default: the profile's benchmark.runs)")
    parser.add_argument(
        "--min-time",
        type=float,
        help="time at least this many seconds (whichever of --runs/--min-time gives more runs)",
    )
    parser.add_argument("--warmup", type=int, help="untimed runs after the first inference (default: the profile's)")
    parser.add_argument(
        "--threads", type=int, help="interpreter threads (default: the profile's; capped to this host's cores)"
    )
    parser.add_argument(
        "--input", type=Path, help="input data: .npy (one input) or .npz (one array per input); default: seeded random"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random input (default 0)")
    parser.add_argument("--json", type=Path, help="also write the results (with every run's timing) to this JSON file")
    dev = parser.add_argument_group(f"on a phone or emulator (benchmark_model over adb; see {doc('android.md')})")
    dev.add_argument(
        "--device", help="adb (the one attached device), adb:SERIAL, or local (the host standing in for a device)"
    )
    dev.add_argument(
        "--benchmark-binary",
        type=Path,
        help="TFLite's benchmark_model for the device ABI (or $EDGEPORT_BENCHMARK_MODEL)",
    )
    dev.add_argument("--use-gpu", action="store_true", help="GPU delegate")
    dev.add_argument("--use-nnapi", action="store_true", help="NNAPI delegate")
    dev.add_argument("--no-xnnpack", action="store_true", help="XNNPACK off")
    dev.add_argument(
        "--big-cores",
        action="store_true",
        help="pin to the big cores with taskset (mask from the cores' max frequencies)",
    )
    dev.add_argument("--op-profiling", action="store_true", help="per-op timings")
    dev.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a device run is stopped (default 300)"
    )
    parser.set_defaults(run=run)


def run_on_device(args: argparse.Namespace) -> int:
    """``--device``: the same statistics from benchmark_model on the phone, cleaned up afterwards."""
    from ..atomic import write_text
    from ..devices.android import bench_on_device
    from ..errors import UsageError
    from ..profiles import load_profile
    from ..report.report import dumps

    if args.target and "," in args.target:
        raise UsageError("--device benchmarks one target at a time; pass --target android-arm64.")
    result = bench_on_device(
        args.model,
        load_profile(args.target or "android-arm64"),
        args.device,
        threads=args.threads,
        use_xnnpack=False if args.no_xnnpack else None,
        use_gpu=args.use_gpu,
        use_nnapi=args.use_nnapi,
        warmup_runs=args.warmup,
        num_runs=args.runs,
        big_cores=args.big_cores,
        op_profiling=args.op_profiling,
        benchmark_binary=args.benchmark_binary,
        timeout_s=args.timeout,
    )
    print(result.render())
    if args.json:
        write_text(args.json, dumps(result.to_dict()))
    return 0


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..atomic import write_text
    from ..benchmark import benchmark
    from ..errors import NotSupportedError
    from ..profiles import load_profiles
    from ..report.report import dumps

    if args.device:
        return run_on_device(args)
    profiles = load_profiles(args.target) if args.target else [None]
    if len(profiles) > 1 and not str(args.model).lower().endswith(".onnx"):
        skipped = [p.name for p in profiles if p.benchmark.interpreter == "onnxruntime"]
        profiles = [p for p in profiles if p.benchmark.interpreter != "onnxruntime"]
        if skipped:
            print(f"edgeport: note: skipped {', '.join(skipped)}: it benchmarks .onnx files", file=sys.stderr)
    results, errors = [], []
    for profile in profiles:
        try:
            result = benchmark(
                args.model,
                profile,
                runs=args.runs,
                min_time=args.min_time,
                warmup=args.warmup,
                threads=args.threads,
                inputs=args.input,
                seed=args.seed,
            )
        except NotSupportedError as exc:  # one target's interpreter refusing the model does not stop the others
            name = profile.name if profile else "host"
            errors.append({"target": name, "error": str(exc), "exit_code": exc.exit_code})
            print(f"edgeport: error: {exc}", file=sys.stderr)
            continue
        if results:
            print()
        print(result.render())
        results.append(result)
    if args.json:
        payload = {
            "edgeport_version": __version__,
            "model": str(args.model),
            "results": [r.to_dict() for r in results],
            "errors": errors,
        }
        write_text(args.json, dumps(payload))
    return NotSupportedError.exit_code if errors else 0
