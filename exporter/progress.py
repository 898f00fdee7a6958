"""Step-by-step progress and the closing warnings on stderr: long steps (TensorFlow import, conversion)
say what they are doing, and each warning of the reports written is repeated once at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import TextIO

WARNING_PREFIX = "edgeport: warning: "


class Progress:
    """Prints ``[step] message (elapsed)`` lines; silent when disabled (the Python API's default).

    ``--quiet`` disables it, which silences the warnings too: they are in report.json either way.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()

    def step(self, stage: str, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[{elapsed:6.1f}s] {stage:<9} {message}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.enabled:
            print(f"          {message}", file=self.stream, flush=True)

    def done(self) -> None:
        self.step("done", "")

    def warnings(self, lines: Iterable[str]) -> None:
        """One ``edgeport: warning: ...`` line per warning, after the last step and before the summary."""
        if not self.enabled:
            return
        sys.stdout.flush()  # keep the order on a terminal that shows both streams
        for line in lines:
            print(f"{WARNING_PREFIX}{line}", file=self.stream, flush=True)
