"""Measuring one fresh child process tree (for benchmarks/speed.py).

A measurement is one child started for it alone, so TensorFlow's import and every cache start cold and
the tree's memory belongs to that measurement only. Wall time is the parent's clock around the child;
CPU is user+sys of the child and of every descendant it waited for (``os.wait4`` reports the child's
own and its reaped children's usage); peak RSS is the largest sum of resident memory over the child
and all its live descendants, polled from /proc (no psutil needed; shared library pages count once per
process, as ``ps`` would add them up). The child runs in its own session, so a descendant it left
behind is found (by session id), counted and killed: only processes this measurement started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
#: The line a child prints last: ``SPEED_RESULT {json}`` (its own phase timings).
RESULT_PREFIX = "SPEED_RESULT "


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process visible in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and len(fields) > 4:
                table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, and of any process left in its session."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sid) in table.items():
        children.setdefault(ppid, []).append(pid)
    members, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in members:
            members.add(pid)
            todo.extend(children.get(pid, ()))
    members |= {pid for pid, (_ppid, sid) in table.items() if sid == root}  # orphans re-parented to init
    total = 0
    for pid in members:
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                total += int(handle.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (what a measured child left running)."""
    return [pid for pid, (_ppid, s) in _process_table().items() if s == sid and pid != os.getpid()]


@dataclass
class TreeRun:
    """One measured child: exit code, wall, tree CPU, tree peak RSS, and what it printed as its result."""

    exit: int | None
    wall_s: float
    cpu_s: float
    peak_rss: int
    result: dict[str, Any] | None
    log: str
    stragglers: int = 0
    killed: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def run_tree(
    cmd: list[str], log: Path, env: dict[str, str], *, cwd: Path, timeout: float, poll_s: float = 0.1
) -> TreeRun:
    """Run ``cmd`` as a fresh session (stdout+stderr to ``log``) and measure its whole process tree.

    ``cwd`` must not be a repository root: ``python -m exporter...`` children put their working folder
    first on ``sys.path``, so they would import that tree's ``exporter`` instead of the one measured.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak, killed = 0, ""
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)  # fmt: skip
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss(proc.pid))
            if not killed and time.perf_counter() - t0 > timeout:
                killed = f"timed out after {timeout:.0f} s"
                os.killpg(proc.pid, signal.SIGKILL)  # the session this measurement started, and only it
            time.sleep(poll_s)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    left = session_members(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(encoding="utf-8", errors="replace")
    results = [ln[len(RESULT_PREFIX) :] for ln in text.splitlines() if ln.startswith(RESULT_PREFIX)]
    return TreeRun(
        exit=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss=peak,
        result=json.loads(results[-1]) if results else None,
        log=str(log),
        stragglers=len(left),
        killed=killed,
    )
