"""Measurements shared between targets that received the same bytes.

``--target all`` often gives android-arm64, the Cortex-M targets and the Edge TPU the same int8 model:
its fidelity and per-layer error were measured once per target. A measurement is keyed by the contents
(sha256) of every input it depends on, so a hit returns exactly what a new measurement would, and a
copy, so no caller can change another's result. Bounded: an export has a handful of distinct models.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
_MAX_ENTRIES = 16
_RESULTS: OrderedDict[str, Any] = OrderedDict()


def content_key(*parts: Any) -> str:
    """A digest of ``parts``: bytes as they are, arrays by dtype, shape and data, anything else by repr."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            digest.update(b"b")
            digest.update(bytes(part))
        elif isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            digest.update(f"a{a.dtype}{a.shape}".encode())
            digest.update(a.tobytes())
        else:
            digest.update(f"r{part!r}".encode())
        digest.update(b"|")
    return digest.hexdigest()


def memo(key: str, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``key`` (a :func:`content_key`); every caller gets its own deep copy."""
    if key in _RESULTS:
        _RESULTS.move_to_end(key)
    else:
        _RESULTS[key] = compute()
        while len(_RESULTS) > _MAX_ENTRIES:
            _RESULTS.popitem(last=False)
    return copy.deepcopy(_RESULTS[key])


#: Measurements that run in child processes (TFLite Micro's arena, Vela), by content key: under way or done.
_SHARED: dict[str, Future] = {}
_SHARED_LOCK = threading.Lock()


def shared(key: str, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``key`` even across threads: a caller arriving while another thread computes
    it waits for that result. A failure is not kept: the next caller computes again (and sees the error)."""
    with _SHARED_LOCK:
        future = _SHARED.get(key)
        mine = future is None or (future.done() and future.exception() is not None)
        if mine:
            future = _SHARED[key] = Future()
            done = [k for k, f in _SHARED.items() if f.done()]
            for stale in done[: max(0, len(_SHARED) - _MAX_ENTRIES)]:  # bounded, oldest finished first
                del _SHARED[stale]
    if mine:
        try:
            future.set_result(compute())
        except BaseException as exc:  # kept for whoever waits on it now
            future.set_exception(exc)
    return copy.deepcopy(future.result())


def start_shared(key: str, compute: Callable[[], Any]) -> None:
    """Begin :func:`shared` ``(key, compute)`` in a background thread (for work done by a child process,
    so it uses a core the export leaves idle); its caller later takes the result from :func:`shared`."""

    def run() -> None:
        with contextlib.suppress(BaseException):
            shared(key, compute)

    threading.Thread(target=run, name="edgeport-prefetch", daemon=True).start()
