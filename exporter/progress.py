"""Step-by-step progress on stderr: long steps (TensorFlow import, conversion) say what they are doing."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``[step] message (elapsed)`` lines; silent when disabled (the Python API's default)."""

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
