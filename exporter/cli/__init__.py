"""The ``edgeport`` command: one module per subcommand over a documented library call.

``main()`` is the only place that turns errors into exit codes: an :class:`EdgeportError` prints one
line (``--debug`` adds the traceback); anything else is an internal error (exit 1) reported the same
way. Nothing heavy is imported before a subcommand needs it, so ``--help`` and ``targets`` are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import traceback

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_USAGE, EdgeportError
from ..guides import doc
from . import bench_cmd, compress_cmd, edgetpu_cmd, export_cmd, report_cmd, run_cmd, suggest_cmd, targets_cmd

_COMMANDS = (export_cmd, targets_cmd, bench_cmd, report_cmd, edgetpu_cmd, run_cmd, compress_cmd, suggest_cmd)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"edgeport: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgeport",
        description="Export a trained Keras model to a verified full-int8 model for a device:\n"
        "Android phones (LiteRT), the Coral Edge TPU, Arm Cortex-M (TFLite Micro, Ethos-U).",
        # Unwrapped, so the guides' paths stay whole on their own lines.
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok; 1 internal error; 2 usage or bad input; 3 does not fit or not supported\n"
        "on the target; 4 conversion failed.\n\n"
        "Guides, installed with edgeport:\n"
        f"  {doc('firmware.md')}  (Cortex-M, Ethos-U firmware builds)\n"
        f"  {doc('android.md')}  (phones and emulators over adb)\n"
        f"  {doc('edgetpu.md')}  (Coral Edge TPU compiler)",
    )
    parser.add_argument("--version", action="version", version=f"edgeport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and keep the converter's log")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="library log level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def run() -> None:
    """The ``edgeport`` console script: :func:`main`, then exit at once.

    Every output is written and closed by the time ``main`` returns; TensorFlow's interpreter teardown
    would add more than a second to every command a Makefile runs, so a process that imported it ends
    with ``os._exit`` after flushing the terminal streams.
    """
    code = main()
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: already printed by argparse
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    level = "DEBUG" if args.debug else args.log_level.upper()  # --debug shows what tools printed, too
    logging.basicConfig(level=level, format="edgeport: %(levelname)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return int(args.run(args) or 0)
    except EdgeportError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edgeport: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "edgeport: interrupted; no target was left half-written (each output folder holds all of this "
            "run's files or none of them).",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:  # ENOSPC and friends outside edgeport's own writers (temp files, children)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _internal_error(exc, args.debug)
        print(
            f"edgeport: error: No space left on device ({exc.filename or 'a temporary file'}). "
            "Free some space (or set TMPDIR to a larger disk) and run again.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, with how to get the details
        return _internal_error(exc, args.debug)


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(
        f"edgeport: internal error: {type(exc).__name__}: {first[:300]} (re-run with --debug and report it)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL
