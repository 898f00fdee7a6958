"""The host standing in for an Android device, so the whole device flow runs in tests without a phone.

A temporary folder plays ``/data/local/tmp``; ``shell`` runs the *same* command text the phone would
get through ``bash -c`` after mapping device paths to host paths, with the device folder as the working
directory. ``getprop`` answers from a dict of fake properties. Numbers measured this way are labelled
as host numbers, never as device numbers.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .device import DEVICE_TMP, DeviceTimeout

log = logging.getLogger(__name__)

LOCAL_METHOD = "host stand-in (benchmark_model run on this computer, not on a device)"

_HOST_ABI = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}


def host_properties() -> dict[str, str]:
    """Properties describing this computer as if it were a device (the ABI is the host's real one)."""
    machine = platform.machine().lower()
    return {
        "ro.product.cpu.abi": _HOST_ABI.get(machine, machine),
        "ro.product.model": f"host stand-in ({platform.node() or 'localhost'})",
        "ro.product.manufacturer": "",
        "ro.hardware": machine,
        "ro.build.version.release": "",
        "ro.build.version.sdk": "",
    }


class LocalDevice:
    """A :class:`~.device.Device` that is this computer.

    ``remap`` maps further device path prefixes to host folders (e.g. a fake
    ``/sys/devices/system/cpu`` holding ``cpufreq`` files) so a test can describe a big.LITTLE phone.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None = None,
        props: Mapping[str, str] | None = None,
        remap: Mapping[str, str | os.PathLike[str]] | None = None,
        serial: str = "local",
    ) -> None:
        self.serial = serial
        self.method = LOCAL_METHOD
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="edgeport-device-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.props = {**host_properties(), **(props or {})}
        self.remap = {DEVICE_TMP: str(self.root), **{k: str(v) for k, v in (remap or {}).items()}}
        #: Every command as the device would have received it, in order (before path mapping).
        self.history: list[str] = []

    # --- path mapping: the only difference between the phone's command text and what runs here ---

    def to_host(self, text: str) -> str:
        """Device paths in ``text`` replaced by their host folders (longest prefix first)."""
        for prefix in sorted(self.remap, key=len, reverse=True):
            text = text.replace(prefix, self.remap[prefix])
        return text

    # --- Device protocol ---

    def shell(self, cmd: str, timeout: float | None = None) -> tuple[int, str]:
        self.history.append(cmd)
        # A new session makes the command and everything it starts one process group, so a timeout
        # or Ctrl-C stops exactly what this call started.
        proc = subprocess.Popen(
            ["bash", "-c", self.to_host(cmd)],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._kill(proc)
            raise DeviceTimeout(f"Command on {self.serial} did not finish within {timeout:g} s: {cmd[:120]}") from exc
        except BaseException:
            self._kill(proc)
            raise
        return proc.returncode, out.decode("utf-8", errors="replace")

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def push(self, local: Path, remote: str) -> None:
        self.history.append(f"push {local} {remote}")
        target = Path(self.to_host(remote))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def remove(self, remote: str) -> None:
        self.history.append(f"rm -rf {remote}")
        target = Path(self.to_host(remote))
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def getprop(self, name: str) -> str:
        return self.props.get(name, "")

    def close(self) -> None:
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalDevice(serial={self.serial!r}, root={str(self.root)!r})"
