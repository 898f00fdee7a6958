"""Atomic, idempotent file output.

Firmware builds call edgeport from make: a half-written file with a fresh mtime would be taken as up
to date, and a rewritten-but-identical file would trigger a needless rebuild. So every output goes
to a temporary file in the destination folder and is renamed into place, and a file whose bytes are
unchanged is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError


def write_bytes(path: str | os.PathLike[str], data: bytes, *, keep_unchanged: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically; return False when an identical file was kept."""
    target = Path(path)
    if keep_unchanged and target.is_file():
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return False
        except OSError:
            pass
    ensure_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputPathError(
            f"Cannot write to output directory {target.parent}: {exc.strerror or exc}.",
            hint="Choose a writable directory with -o.",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from exc
        raise
    return True


def write_error(target: Path, exc: OSError) -> OutputPathError:
    """A failed write as the user's problem to fix (a full disk, a quota, a read-only mount), in one line."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputPathError(
            f"No space left on the device holding {target.parent} while writing {target.name}.",
            hint="Free some space there or choose another directory with -o; no file was left half-written.",
        )
    return OutputPathError(
        f"Cannot write {target}: {exc.strerror or exc}.",
        hint="Check the directory's permissions and mount, or choose another directory with -o.",
    )


def write_text(path: str | os.PathLike[str], text: str, *, keep_unchanged: bool = True) -> bool:
    """Text flavour of :func:`write_bytes` (UTF-8, newline normalised to ``\\n``)."""
    return write_bytes(path, text.encode("utf-8"), keep_unchanged=keep_unchanged)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) or raise a one-line error naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(
            f"Cannot create output directory {path}: {exc.strerror or exc}.",
            hint="Choose a writable directory with -o.",
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"Output directory {path} is not writable.", hint="Choose a writable directory with -o.")


@contextlib.contextmanager
def scratch_dir(prefix: str = "edgeport-") -> Iterator[Path]:
    """A private working folder that disappears with everything in it, even on errors."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)
