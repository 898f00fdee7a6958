"""Real devices over adb: discovery, the adb server's lifetime, and two transports.

``AdbutilsDevice`` talks the adb protocol from Python (``pip install 'edgeport[android]'``, which also
bundles an adb binary); ``AdbBinaryDevice`` drives the ``adb`` command when the user prefers it
(``EDGEPORT_ADB_BACKEND=binary``) or adbutils is missing. Listing devices starts an adb server when
none runs; edgeport stops a server it started once it is done, and never touches one that was
already running (the user's Android Studio may be using it).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import DeviceError, UsageError
from .device import ADB_METHOD, Device, DeviceDisconnected, DeviceTimeout
from .local import LocalDevice

log = logging.getLogger(__name__)

_MARKER = "__EDGEPORT_EXIT__="
_BACKENDS = ("auto", "adbutils", "binary")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_GONE = ("not found", "offline", "no devices", "closed", "disconnected", "device unauthorized", "protocol fault")

_CONNECT_HINT = (
    "Connect a phone by USB with USB debugging on (Settings > About phone > tap Build number 7 times, "
    "then Developer options > USB debugging) and accept the 'Allow USB debugging' prompt, or start an "
    "emulator ('emulator -avd NAME'); 'adb devices' must list it as 'device'."
)


@dataclass(frozen=True)
class AdbEntry:
    """One line of ``adb devices``: a serial and its state (device, offline, unauthorized, ...)."""

    serial: str
    state: str


def server_address() -> tuple[str, int]:
    """The adb server edgeport talks to: the standard environment variables, else 127.0.0.1:5037."""
    host = os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    except ValueError as exc:
        raise UsageError(
            f"ANDROID_ADB_SERVER_PORT must be a port number; received {os.environ['ANDROID_ADB_SERVER_PORT']!r}."
        ) from exc
    return host, port


def server_running(host: str, port: int) -> bool:
    """Whether something listens where the adb server should be."""
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _adbutils():
    try:
        import adbutils
    except ImportError:
        return None
    return adbutils


def find_adb_binary() -> str | None:
    """The ``adb`` on PATH, else the one adbutils bundles."""
    exe = shutil.which("adb")
    if exe:
        return exe
    mod = _adbutils()
    if mod is not None:
        try:
            return mod.adb_path()
        except Exception:  # adbutils raises AdbError when it has no binary for this platform
            return None
    return None


class AdbServer:
    """The adb server connection, remembering whether edgeport started the server (to stop it again)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.host, self.port = server_address()
        self.was_running = server_running(self.host, self.port)
        self.started = False
        self._users = 0
        self.adb = find_adb_binary()
        if backend == "adbutils":
            self.client = _adbutils().AdbClient(host=self.host, port=self.port, socket_timeout=30)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def list(self) -> list[AdbEntry]:
        """``adb devices`` (starting the server if none runs)."""
        try:
            if self.backend == "adbutils":
                self._start_quietly()
                entries = [AdbEntry(i.serial, i.state) for i in self.client.list()]
            else:
                proc = self.run_adb(["devices"], timeout=30)
                if proc.returncode != 0:
                    raise DeviceError(f"'adb devices' failed: {_last_line(proc.stdout)}")
                entries = []
                for line in proc.stdout.splitlines():
                    parts = line.split("\t")
                    if len(parts) == 2 and parts[0].strip():
                        entries.append(AdbEntry(parts[0].strip(), parts[1].strip()))
        except DeviceError:
            self._note_started()
            raise
        except Exception as exc:  # adbutils: AdbError / AdbTimeout / OSError when no server can start
            self._note_started()
            raise DeviceError(
                f"Cannot reach or start the adb server at {self.address}: {exc}.",
                hint="Check that 'adb start-server' works, or set ANDROID_ADB_SERVER_PORT to your server's port.",
            ) from exc
        self._note_started()
        return entries

    def _start_quietly(self) -> None:
        """Start a local server with its output captured, before adbutils would start one.

        adbutils runs ``adb start-server`` with the terminal as its stdout/stderr, so the binary's
        ``* daemon not running; starting now`` lines would land above edgeport's own one-line
        message; here they go to the debug log (``--debug`` / ``--log-level debug``) instead.
        """
        if self.was_running or self.host not in _LOOPBACK or not self.adb or server_running(self.host, self.port):
            return
        try:
            self.run_adb(["start-server"], timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:  # adbutils then says why it cannot connect
            log.debug("adb start-server failed: %s", exc)

    def _note_started(self) -> None:
        if not self.was_running and self.host in _LOOPBACK and server_running(self.host, self.port):
            self.started = True

    def run_adb(self, args: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        if not self.adb:
            raise DeviceError("No adb program found.", hint=_INSTALL_HINT)
        # adb starts a server only for a local one: pass -H only when the user named a host.
        host = ["-H", self.host] if os.environ.get("ANDROID_ADB_SERVER_HOST") else []
        proc = subprocess.run(
            [self.adb, *host, "-P", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        _log_adb_output(args, proc.stdout)
        return proc

    def acquire(self) -> None:
        self._users += 1

    def release(self) -> None:
        """Drop one user; the last one stops the server if edgeport started it."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self.stop_if_started()

    def stop_if_started(self) -> None:
        if not self.started:
            return
        self.started = False
        log.debug("stopping the adb server edgeport started at %s", self.address)
        try:
            if self.backend == "adbutils":
                self.client.server_kill()
            else:
                self.run_adb(["kill-server"], timeout=15)
        except Exception as exc:  # best effort: report, never mask the real outcome
            log.warning("could not stop the adb server edgeport started at %s: %s", self.address, exc)
            return
        deadline = time.monotonic() + 5
        while server_running(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


_INSTALL_HINT = (
    "Install the Android extra (pip install 'edgeport[android]', which bundles adb) or Android's "
    "platform-tools (Debian: apt install adb), then retry."
)


def _log_adb_output(args: list[str], text: str) -> None:
    """adb's own lines (``* daemon not running; starting now at tcp:5037``) go to the debug log only.

    The one-line error already says what happened; the raw text helps only when debugging.
    """
    if not log.isEnabledFor(logging.DEBUG):
        return
    what = " ".join(args[:2]) if args[:1] != ["-s"] else " ".join(args[2:3])
    for line in text.splitlines():
        if line.strip():
            log.debug("adb %s: %s", what, line.rstrip())


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _split_marker(serial: str, raw: str) -> tuple[int, str]:
    """Output and exit code from a command run as ``CMD; echo MARKER$?`` (adb shell v1 has no exit code)."""
    raw = raw.replace("\r\n", "\n")
    at = raw.rfind(_MARKER)
    if at < 0:
        raise DeviceDisconnected(serial, during="a device command")
    code_text = raw[at + len(_MARKER) :].strip().splitlines()[0] if raw[at + len(_MARKER) :].strip() else ""
    try:
        code = int(code_text)
    except ValueError as exc:
        raise DeviceDisconnected(serial, during="a device command") from exc
    return code, raw[:at]


class _AdbDeviceBase:
    """What both transports share: exit codes through a marker, and rm/getprop through the shell."""

    method = ADB_METHOD

    def __init__(self, serial: str, server: AdbServer) -> None:
        self.serial = serial
        self._server = server
        self._closed = False
        server.acquire()

    def shell(self, cmd: str, timeout: float | None = None) -> tuple[int, str]:
        return _split_marker(self.serial, self._raw_shell(f"{cmd}; echo {_MARKER}$?", timeout))

    def _raw_shell(self, cmd: str, timeout: float | None) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def remove(self, remote: str) -> None:
        self.shell(f"rm -rf {shlex.quote(remote)}", timeout=60)

    def getprop(self, name: str) -> str:
        code, out = self.shell(f"getprop {shlex.quote(name)}", timeout=30)
        return out.strip() if code == 0 else ""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.release()

    def _timeout(self, cmd: str, timeout: float | None) -> DeviceTimeout:
        shown = cmd.removesuffix(f"; echo {_MARKER}$?")
        return DeviceTimeout(f"Command on {self.serial} did not finish within {timeout:g} s: {shown[:120]}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(serial={self.serial!r}, server={self._server.address})"


class AdbutilsDevice(_AdbDeviceBase):
    """A device reached with adbutils (pure-Python adb protocol client)."""

    def __init__(self, serial: str, server: AdbServer) -> None:
        super().__init__(serial, server)
        self._dev = server.client.device(serial)

    def _raw_shell(self, cmd: str, timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            conn = self._dev.shell(cmd, stream=True)
        except Exception as exc:  # AdbError "device 'X' not found", connection refused: the device is gone
            raise DeviceDisconnected(self.serial, during="a device command") from exc
        chunks: list[bytes] = []
        try:
            sock = conn.conn
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._timeout(cmd, timeout)
                sock.settimeout(1.0 if remaining is None else min(remaining, 1.0))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:  # socket.timeout: no output for a second, keep waiting
                    continue
                except OSError as exc:
                    raise DeviceDisconnected(self.serial, during="a device command") from exc
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            conn.close()
        return b"".join(chunks).decode("utf-8", errors="replace")

    def push(self, local: Path, remote: str) -> None:
        try:
            self._dev.sync.push(Path(local), remote, mode=0o644)
        except Exception as exc:
            if not self._present():
                raise DeviceDisconnected(self.serial, during="a file push") from exc
            raise DeviceError(f"Pushing {local} to {self.serial}:{remote} failed: {exc}.") from exc

    def _present(self) -> bool:
        try:
            return any(e.serial == self.serial and e.state == "device" for e in self._server.list())
        except DeviceError:
            return False


class AdbBinaryDevice(_AdbDeviceBase):
    """A device reached by running the ``adb`` program."""

    def _raw_shell(self, cmd: str, timeout: float | None) -> str:
        try:
            proc = self._server.run_adb(["-s", self.serial, "shell", cmd], timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise self._timeout(cmd, timeout) from exc
        if _MARKER not in proc.stdout and any(word in proc.stdout.lower() for word in _GONE):
            raise DeviceDisconnected(self.serial, during="a device command")
        return proc.stdout

    def push(self, local: Path, remote: str) -> None:
        proc = self._server.run_adb(["-s", self.serial, "push", str(local), remote], timeout=600)
        if proc.returncode != 0:
            if any(word in proc.stdout.lower() for word in _GONE):
                raise DeviceDisconnected(self.serial, during="a file push")
            raise DeviceError(f"Pushing {local} to {self.serial}:{remote} failed: {_last_line(proc.stdout)}.")


def _parse_spec(spec: str) -> tuple[str, str | None]:
    text = spec.strip()
    if text == "local":
        return "local", None
    if text == "adb":
        return "adb", None
    if text.startswith("adb:") and text[4:].strip():
        return "adb", text[4:].strip()
    raise UsageError(
        f"--device must be 'adb' (the one connected device), 'adb:SERIAL' or 'local' (the host stand-in for tests); "
        f"received {spec!r}."
    )


def _choose_backend(backend: str | None) -> str:
    choice = (backend or os.environ.get("EDGEPORT_ADB_BACKEND") or "auto").strip().lower()
    if choice not in _BACKENDS:
        raise UsageError(f"EDGEPORT_ADB_BACKEND must be one of {', '.join(_BACKENDS)}; received {choice!r}.")
    have_adbutils = _adbutils() is not None
    if choice == "adbutils" and not have_adbutils:
        raise DeviceError("The adbutils backend was requested but adbutils is not installed.", hint=_INSTALL_HINT)
    if choice == "auto":
        choice = "adbutils" if have_adbutils else "binary"
    if choice == "binary" and not find_adb_binary():
        raise DeviceError("No adb program found (not on PATH, and adbutils is not installed).", hint=_INSTALL_HINT)
    return choice


def _state_problem(entry: AdbEntry) -> str:
    if entry.state == "unauthorized":
        return (
            f"Device {entry.serial} is unauthorized: unlock it and accept the 'Allow USB debugging' prompt "
            "(revoke USB debugging authorizations in Developer options and replug if no prompt appears)."
        )
    if entry.state == "offline":
        return f"Device {entry.serial} is offline: replug the cable or restart the emulator, then check 'adb devices'."
    return f"Device {entry.serial} is in state '{entry.state}', not 'device': wait for it to boot or replug it."


def find_devices(spec: str = "adb", *, backend: str | None = None) -> list[Device]:
    """The ready devices matching ``spec`` (``adb``, ``adb:SERIAL`` or ``local``); never an empty list.

    Each returned device must be closed (the last close stops an adb server edgeport started).
    Raises :class:`DeviceError` (exit 2) with what to do when no matching device is ready.
    """
    kind, serial = _parse_spec(spec)
    if kind == "local":
        return [LocalDevice()]
    server = AdbServer(_choose_backend(backend))
    try:
        entries = server.list()
    except BaseException:
        server.stop_if_started()
        raise
    chosen: list[AdbEntry]
    problem: str | None = None
    if serial is not None:
        chosen = [e for e in entries if e.serial == serial]
        if not chosen:
            listed = ", ".join(f"{e.serial} ({e.state})" for e in entries) or "none"
            problem = (
                f"Device {serial} is not connected (adb lists: {listed}). Check the serial with 'adb devices' "
                "and use --device adb:SERIAL, or --device adb when only one device is connected."
            )
        elif chosen[0].state != "device":
            problem = _state_problem(chosen[0])
    else:
        chosen = [e for e in entries if e.state == "device"]
        if not chosen:
            not_ready = [e for e in entries if e.state != "device"]
            problem = _state_problem(not_ready[0]) if not_ready else "NO_DEVICE"
    if problem is not None:
        started = server.started
        server.stop_if_started()
        if problem == "NO_DEVICE":
            if not started:
                where = f"the adb server at {server.address} lists none"
            elif server_running(server.host, server.port):
                where = (
                    f"edgeport started an adb server at {server.address} and could not stop it: run 'adb kill-server'"
                )
            else:
                where = "edgeport started an adb server, found no device and stopped it again"
            problem = f"No Android device found over adb ({where}). {_CONNECT_HINT}"
        raise DeviceError(problem)
    cls = AdbutilsDevice if server.backend == "adbutils" else AdbBinaryDevice
    return [cls(e.serial, server) for e in chosen]


def find_device(spec: str = "adb", *, backend: str | None = None) -> Device:
    """Exactly one device for ``spec``; several connected devices without a serial is an error."""
    devices = find_devices(spec, backend=backend)
    if len(devices) > 1:
        serials = ", ".join(d.serial for d in devices)
        for device in devices:
            device.close()
        raise DeviceError(
            f"Several Android devices are connected ({serials}): choose one with --device adb:SERIAL, "
            f"e.g. --device adb:{devices[0].serial}."
        )
    return devices[0]
