"""Import TensorFlow and Keras once, quietly.

TensorFlow's C++ side prints absl/oneDNN banners to the C-level stderr before its logging is set up,
ignoring ``TF_CPP_MIN_LOG_LEVEL``; users of a CLI should see edgeport's progress, not that. The import
runs with file descriptor 2 pointed at /dev/null, and Python exceptions still surface normally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def silenced_stderr_fd() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration (C and C++ writes included)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly(verbose: bool = False) -> None:
    """Load TensorFlow and Keras now, without their start-up banners (unless ``verbose``)."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    context = contextlib.nullcontext() if verbose else silenced_stderr_fd()
    with context:
        import keras
        import tensorflow  # noqa: F401

    keras.utils.disable_interactive_logging()
    logging.getLogger("tensorflow").addFilter(_expected_retracing)


def _expected_retracing(record: logging.LogRecord) -> bool:
    """Drop TensorFlow's "N out of the last M calls ... triggered tf.function retracing": edgeport traces
    one function per model it evaluates (exporter.analyze.inference), so an API user exporting many models
    in one process would see it once per model, about nothing they can change."""
    return "triggered tf.function retracing" not in record.getMessage()
