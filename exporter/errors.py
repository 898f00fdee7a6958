"""One error hierarchy for everything edgeport refuses or fails at.

Every user-facing failure is an ``EdgeportError`` whose class fixes the process exit code, so the
CLI's ``main()`` can catch the base class, print ``str(error)`` as one line and exit with
``error.exit_code``. Messages follow Keras' wording: what is required, what was received, what to do.
"""

from __future__ import annotations

#: Documented exit codes (README "Exit codes"). Keep in sync with the classes below.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_SUPPORTED = 3
EXIT_CONVERSION = 4


class EdgeportError(Exception):
    """Base class: an internal error unless a subclass says otherwise."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = " ".join(message.split())
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(EdgeportError):
    """Bad command line or bad input: exit 2."""

    exit_code = EXIT_USAGE


class InputModelError(UsageError):
    """The model file is missing, corrupt, of the wrong format or unsafe to load."""


class CalibrationDataError(UsageError):
    """Representative data is missing, of the wrong shape or dtype, or holds NaN/Inf."""


class ProfileError(UsageError):
    """A target profile is unknown or malformed; the message names the key."""


class OutputPathError(UsageError):
    """The output location cannot be written, or would overwrite the input."""


class DeviceError(UsageError):
    """A device is absent, ambiguous or vanished while in use."""


class NotSupportedError(EdgeportError):
    """The model does not fit or cannot run on the target: exit 3 (``--force`` writes anyway)."""

    exit_code = EXIT_NOT_SUPPORTED


class ConversionError(EdgeportError):
    """The converter failed or crashed: exit 4."""

    exit_code = EXIT_CONVERSION


class InternalError(EdgeportError):
    """A bug in edgeport: exit 1. Re-run with --debug and report it."""

    exit_code = EXIT_INTERNAL
