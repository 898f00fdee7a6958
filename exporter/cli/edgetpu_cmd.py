"""``edgeport edgetpu MODEL.tflite``: which ops will run on the Coral Edge TPU, why the rest will not, and how
to fix the model -- predicted without the compiler, and checked against the real ``edgetpu_compiler``
when it is installed.

Exit codes: 0 every op maps to the Edge TPU; 3 some ops run on the host CPU (or the real compiler
disagrees with the prediction); 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_NOT_SUPPORTED, InputModelError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "edgetpu",
        help="predict the Edge TPU compiler's partition of a .tflite, op by op",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="a full-int8 .tflite (e.g. model_int8.tflite from 'edgeport export')")
    parser.add_argument(
        "--num-segments", type=int, default=1, metavar="N", help="predict the compiler's -n N pipelining split"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the analysis as JSON to FILE")
    parser.add_argument(
        "--no-compile", action="store_true", help="do not run edgetpu_compiler even when it is installed"
    )
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="time the compiled model on an attached Edge TPU (needs compiler, runtime, device)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no 'edgeport: warning:' lines (the warnings stay in the --json file)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import write_text
    from ..devices.edgetpu import (
        analyze_edgetpu,
        benchmark_on_device,
        compare,
        find_tools,
        mismatch_warning,
        note_absent_once,
        run_compiler,
    )
    from ..errors import UsageError
    from ..progress import WARNING_PREFIX
    from ..verify.graph import TFLiteGraph

    model: Path = args.model
    if model.suffix.lower() != ".tflite":
        raise InputModelError(
            f"'edgeport edgetpu' reads a .tflite model; received {model.name}.",
            hint="Export it first: edgeport export MODEL --target edgetpu.",
        )
    if args.num_segments < 1:
        raise UsageError(f"--num-segments must be at least 1; received {args.num_segments}.")
    analysis = analyze_edgetpu(TFLiteGraph.from_file(model), num_segments=args.num_segments, model_name=model.name)
    print(analysis.render_log(), end="")
    print()
    print(f"Verdict: {analysis.verdict}")
    if analysis.segments:
        for note in analysis.notes:
            print(note)
        for s in analysis.segments:
            print(
                f"  segment {s.index}: {len(s.op_indices)} ops, {s.param_bytes} parameter bytes (estimate)"
                + ("" if s.fits_cache else " -- exceeds the cache, streams from the host")
            )
    if analysis.param_warning and not args.quiet:
        sys.stdout.flush()
        print(f"{WARNING_PREFIX}{analysis.param_warning}", file=sys.stderr)
    for fix in analysis.fixes:
        print(f"Fix: {fix.render()}")

    result = {"analysis": analysis.to_dict()}
    tools = find_tools()
    result["tools"] = tools.to_dict()
    mismatches: list[str] = []
    note = note_absent_once(tools)
    if note:
        print(note)
    compiled = None
    if tools.compiler and not args.no_compile:
        compiled = run_compiler(model, model.parent, num_segments=args.num_segments, compiler=tools.compiler)
        if compiled is not None:
            print(
                f"Compiled with edgetpu_compiler {compiled.log.version or '?'} in {compiled.seconds:.1f} s: {compiled.output_model}"
            )
            mismatches = compare(analysis, compiled)
            warning = mismatch_warning(mismatches)
            if warning:
                print(warning, file=sys.stderr)
                for line in mismatches:
                    print(f"  {line}", file=sys.stderr)
            else:
                print("The real compiler agrees with the prediction.")
            result["compiler_run"] = compiled.to_dict()
            result["mismatches"] = mismatches
    if args.benchmark:
        if compiled is None or compiled.output_model is None:
            print("No benchmark: it needs the compiled model (edgetpu_compiler) first.")
        else:
            bench = benchmark_on_device(compiled.output_model)
            print(f"Edge TPU latency: median {bench['median_ms']:.3f} ms over {bench['runs']} runs -- {bench['how']}")
            result["benchmark"] = bench
    if args.json:
        write_text(args.json, json.dumps(result, indent=2, default=str) + "\n")
    return 0 if analysis.fully_mapped and not mismatches else EXIT_NOT_SUPPORTED
