"""``edgeport suggest``: what blocks a model on a target, and the architecture change that fixes it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "suggest",
        help="name what blocks a model on a target (ops, float layers, flash, RAM) and what to change",
        description=__doc__,
    )
    parser.add_argument("model", help=".keras, .h5, SavedModel directory or .tflite")
    parser.add_argument("-t", "--target", required=True, help="target name, comma list, 'all' or a profile .toml")
    parser.add_argument("--calib", help="representative data (default: synthetic; enough for ops and sizes)")
    parser.add_argument("--input-shape", help="static input shape for models with dynamic dims, e.g. 1,96,96,3")
    parser.add_argument("--json", action="store_true", help="print the suggestions as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..options import parse_shape
    from ..suggest import suggest

    extra = {"input_shape": parse_shape(args.input_shape)} if args.input_shape else {}
    results = suggest(args.model, args.target, calib=args.calib, **extra)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print("\n\n".join(r.render() for r in results))
    return 0
