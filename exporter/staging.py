"""A target's files appear together or not at all.

Firmware builds call edgeport from make, whose rules depend on ``model.mk`` (and CI on
``report.json``): if a run stopped after the model file but before the report, a rule would take the
folder as up to date with a model its report never described. So a target's files are first written
to a hidden staging folder beside its output folder (same filesystem: moves are renames, and a full
disk fails while staging, before anything is touched), then moved into place with interrupts held
back, ``model.mk`` and ``report.json`` last. A folder that did not exist appears with one rename.
An unchanged file keeps the copy already in place, and its mtime, so make rebuilds nothing.

A run killed outright (SIGKILL, the OOM killer) runs no cleanup; its staging folder's name carries its pid,
and the next run that stages beside it removes it (:func:`sweep_leftovers`).

Everything that names a path in a report is written while staging, so :meth:`Stage.relocate` turns
the staging folder's name into the output folder's in the report before it is rendered.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import filecmp
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import ensure_dir, write_bytes
from .errors import OutputPathError

#: What make and CI look at, in the order they are moved in: after every other file of the target.
LAST = ("model.mk", "report.json")
#: Names the staging folders carry (hidden: no glob or make pattern picks them up).
PREFIX = ".edgeport-staging-"
#: Test hook: ``EDGEPORT_TEST_SIGINT_AT=<checkpoint>`` sends this process a real SIGINT there.
_TEST_SIGNAL_ENV = "EDGEPORT_TEST_SIGINT_AT"

_ACTIVE: contextvars.ContextVar[Stage | None] = contextvars.ContextVar("edgeport_stage", default=None)


@dataclass
class Stage:
    """One target's output folder being prepared: ``folder`` is written, ``final`` receives it on commit."""

    final: Path
    folder: Path
    #: Files outside the output folder (the ``--depfile``), staged beside their own destination.
    external: dict[Path, Path] = field(default_factory=dict)
    #: Names whose mtime must move on commit even when their bytes are unchanged (make's stamp).
    touch: set[str] = field(default_factory=set)
    #: Names an earlier run left in ``final`` that this run must remove (a stale .gz or .onnx).
    stale: set[str] = field(default_factory=set)
    committed: bool = False

    @classmethod
    def create(cls, final: Path) -> Stage:
        final = Path(final)
        ensure_dir(final.parent)
        sweep_leftovers(final.parent)
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{final.name}-{os.getpid()}-", dir=final.parent))
            folder.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would become the output folder's mode
        except OSError as exc:
            raise OutputPathError(
                f"Cannot write to output directory {final.parent}: {exc.strerror or exc}.",
                hint="Choose a writable directory with -o.",
            ) from exc
        return cls(final=final, folder=folder)

    # --- while staging ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[Stage]:
        """Make this the stage that :func:`public_path`, :func:`write_external` and :func:`touch` see."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def public(self, path: Path) -> Path:
        """Where a staged file will live once committed."""
        path = Path(path)
        try:
            return self.final / path.relative_to(self.folder)
        except ValueError:
            return path

    def relocate(self, value: Any) -> Any:
        """``value`` (a report, or anything in one) with the staging folder's path replaced by the final one."""
        old, new = str(self.folder), str(self.final)
        return _replace_strings(value, old, new)

    # --- the end ---------------------------------------------------------------------------------

    def commit(self) -> None:
        """Move every staged file into place, the make/CI-facing ones last; remove stale ones."""
        if self.committed:
            return
        if not self.final.exists() and not self.external and not self.stale:
            checkpoint("commit")
            os.rename(self.folder, self.final)
            self.committed = True
            return
        ensure_dir(self.final)
        names = sorted(p.name for p in self.folder.iterdir())
        ordered = [n for n in names if n not in LAST] + [n for n in LAST if n in names]
        for name in self.stale:
            with contextlib.suppress(FileNotFoundError):
                (self.final / name).unlink()
        for staged, destination in self.external.items():
            _move(staged, destination, touch=False)
        for position, name in enumerate(ordered):
            _move(self.folder / name, self.final / name, touch=name in self.touch)
            if position == 0:
                checkpoint("commit")
        self.committed = True
        shutil.rmtree(self.folder, ignore_errors=True)

    def discard(self) -> None:
        """Forget everything staged (a failed or interrupted run); the output folder stays as it was."""
        if not self.committed:
            shutil.rmtree(self.folder, ignore_errors=True)
            for staged in self.external:
                with contextlib.suppress(OSError):
                    staged.unlink()


def sweep_leftovers(directory: Path) -> list[Path]:
    """Remove what a killed run left staged in ``directory`` (SIGKILL, OOM kill, power loss: no cleanup ran).

    Staging folders and staged external files carry the pid of the run that made them; one whose process no
    longer exists is removed. A live process's (a concurrent export) and anything without a pid are left."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(directory).iterdir():
            pid = _owner(entry.name)
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def _owner(name: str) -> int | None:
    """The pid in ``.edgeport-staging-<name>-<pid>-<suffix>``, or None when the name is not one of ours."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX) :].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move(staged: Path, destination: Path, *, touch: bool) -> None:
    """Rename ``staged`` over ``destination`` unless the bytes are the same (then keep the old file's mtime)."""
    if destination.is_file() and filecmp.cmp(staged, destination, shallow=False):
        staged.unlink()
        if touch:
            os.utime(destination)
        return
    os.replace(staged, destination)
    if touch:
        os.utime(destination)


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new) if old in value else value
    if isinstance(value, dict):
        return {k: _replace_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_strings(v, old, new) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _replace_strings(getattr(value, f.name), old, new) for f in dataclasses.fields(value)}
        if type(value).__dataclass_params__.frozen:
            return dataclasses.replace(value, **changes)
        for name, changed in changes.items():
            setattr(value, name, changed)
        return value
    return value


# --- what the writers call ---------------------------------------------------------------------------


def public_path(path: Path) -> Path:
    """The path a file being staged will have (itself when nothing is being staged)."""
    stage = _ACTIVE.get()
    return stage.public(path) if stage is not None else Path(path)


def write_external(path: Path, data: bytes) -> None:
    """Write a file that lives outside the output folder (the depfile) with the target's commit."""
    stage = _ACTIVE.get()
    if stage is None:
        write_bytes(path, data)
        return
    ensure_dir(Path(path).parent)
    staged = Path(path).parent / f"{PREFIX}{Path(path).name}-{os.getpid()}-{len(stage.external)}"
    write_bytes(staged, data, keep_unchanged=False)
    stage.external[staged] = Path(path)


def mark_stale(path: Path) -> None:
    """``path`` (in the folder being staged) must not survive this run's commit if an earlier run left it."""
    stage = _ACTIVE.get()
    if stage is None:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
    elif (stage.public(path)).exists():
        stage.stale.add(Path(path).name)


def touch(path: Path) -> None:
    """Bump ``path``'s mtime now, or when its stage commits."""
    stage = _ACTIVE.get()
    if stage is not None and stage.public(path) != Path(path):
        stage.touch.add(Path(path).name)
    else:
        os.utime(path)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the commit runs (a few renames), then honour them: a Ctrl-C
    lands before a target's first file moves or after its last, never between."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda s, _frame: received.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), received[0])  # its default action, now that the files are in place


def checkpoint(name: str) -> None:
    """Test hook: deliver a real SIGINT to this process at checkpoint ``name`` (see ``_TEST_SIGNAL_ENV``)."""
    if os.environ.get(_TEST_SIGNAL_ENV) == name:
        os.kill(os.getpid(), signal.SIGINT)
