"""``edgeport targets`` and ``edgeport targets show NAME``: the shipped device profiles."""

from __future__ import annotations

import argparse

from ..profiles import available_targets, describe, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("targets", help="list target profiles, or show one resolved", description=__doc__)
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("name", nargs="?", help="target name or path to a profile .toml (for 'show')")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            from ..errors import UsageError

            raise UsageError("'edgeport targets show' needs a target name, e.g. 'edgeport targets show cortex-m4'.")
        print(describe(load_profile(args.name)), end="")
        return 0
    rows = []
    for name in available_targets():
        p = load_profile(name)
        rows.append((name, p.runtime.name, p.quantization.io_dtype, p.device.reference, p.title))
    widths = [max(len(r[i]) for r in rows + [("target", "runtime", "I/O", "reference device", "")]) for i in range(4)]
    header = ("target", "runtime", "I/O", "reference device")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)))
    print("\nShow one with 'edgeport targets show NAME'; pass your own profile as --target path/to/mine.toml.")
    return 0
