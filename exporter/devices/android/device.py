"""The device layer: the five things a benchmark needs from an Android device, and nothing else.

Keeping the surface this small is what lets the host stand in for a phone (:class:`~.local.LocalDevice`):
the flow in :mod:`.run` issues the same command sequence to either, so tests prove push, run, parse
and clean-up without a phone, and only the transport differs on a real device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from ...errors import DeviceError

#: Where adb may write and execute on every Android device without root.
DEVICE_TMP = "/data/local/tmp"

#: How device numbers are labelled in reports (every number says how it was obtained).
ADB_METHOD = "device (benchmark_model over adb)"


class DeviceDisconnected(DeviceError):
    """The device vanished while a command was running (cable pulled, emulator closed, adb restarted)."""

    def __init__(self, serial: str, *, during: str = "the benchmark", leftover: str | None = None) -> None:
        hint = "Reconnect it (check 'adb devices') and run the benchmark again."
        if leftover:
            hint += f" Files edgeport pushed may remain in {leftover}; delete them with 'adb shell rm -rf {leftover}'."
        super().__init__(f"Device {serial} disconnected during {during}.", hint=hint)
        self.serial = serial


class DeviceTimeout(DeviceError):
    """A device command ran longer than its time limit."""


@runtime_checkable
class Device(Protocol):
    """One Android device (or a stand-in), reached through a shell and a file push."""

    #: adb serial ("emulator-5554", "R58M123ABC") or "local" for the host stand-in.
    serial: str
    #: How numbers measured on this device are labelled.
    method: str

    def shell(self, cmd: str, timeout: float | None = None) -> tuple[int, str]:
        """Run ``cmd`` with the device's ``sh``; return (exit code, stdout and stderr merged).

        Raises :class:`DeviceTimeout` after ``timeout`` seconds (the command is stopped) and
        :class:`DeviceDisconnected` when the device goes away meanwhile.
        """
        ...

    def push(self, local: Path, remote: str) -> None:
        """Copy a host file to ``remote`` (a full device path)."""
        ...

    def remove(self, remote: str) -> None:
        """Delete a device file or folder, recursively; a missing path is not an error."""
        ...

    def getprop(self, name: str) -> str:
        """An Android system property (``ro.product.cpu.abi``); "" when unset."""
        ...

    def close(self) -> None:
        """Release what the device object holds (an adb server edgeport started is stopped)."""
        ...
