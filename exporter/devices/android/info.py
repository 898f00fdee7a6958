"""What the device is: model, SoC, Android version, ABI and CPU clusters, read once per benchmark.

The numbers a benchmark prints mean little without the phone they came from, and the ABI decides
whether the pushed ``benchmark_model`` can run at all, so both are checked before anything is pushed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import DeviceError, UsageError
from ...profiles import TargetProfile
from .device import Device

CPU_SYSFS = "/sys/devices/system/cpu"

#: ABI each phone profile's benchmark_model is built for; the x86_64 emulator image is accepted too.
PHONE_ABI = "arm64-v8a"
EMULATOR_ABI = "x86_64"

# mksh (Android) and bash (the host stand-in) both run this; a core without cpufreq prints no number.
_CPU_CMD = f'for c in {CPU_SYSFS}/cpu[0-9]*; do echo "${{c##*/}} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)"; done'


@dataclass
class DeviceInfo:
    """A device's identity as reported by its system properties and sysfs."""

    serial: str
    model: str
    manufacturer: str
    soc: str
    android_version: str
    sdk: str
    abi: str
    cpu_max_freq_khz: list[int | None] = field(default_factory=list)
    #: The Android emulator (ro.kernel.qemu / ro.boot.qemu = 1, or a ranchu/goldfish board), any ABI.
    emulator: bool = False

    @property
    def cores(self) -> int:
        return len(self.cpu_max_freq_khz)

    def clusters(self) -> list[tuple[int, float]]:
        """(core count, max GHz) per distinct max frequency, slowest first."""
        counts: dict[int, int] = {}
        for freq in self.cpu_max_freq_khz:
            if freq:
                counts[freq] = counts.get(freq, 0) + 1
        return [(n, f / 1e6) for f, n in sorted(counts.items())]

    def describe(self) -> str:
        if self.manufacturer and self.manufacturer.lower() not in self.model.lower():
            name = f"{self.manufacturer} {self.model}"
        else:
            name = self.model or self.serial
        parts = [
            f"SoC {self.soc}" if self.soc else "",
            f"Android {self.android_version}" if self.android_version else "",
        ]
        parts += [f"SDK {self.sdk}" if self.sdk else "", self.abi]
        cpu = f"{self.cores} cores" if self.cores else ""
        clusters = self.clusters()
        if clusters:
            cpu += ": " + ", ".join(f"{n}x{ghz:.2f} GHz" for n, ghz in clusters)
        parts.append(cpu)
        return f"{name} [{self.serial}] (" + ", ".join(p for p in parts if p) + ")"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cores"] = self.cores
        return data


def read_cpu_max_freqs(device: Device) -> list[int | None]:
    """Per-core max frequency in kHz (index = core number); None where the kernel does not say."""
    code, out = device.shell(_CPU_CMD, timeout=30)
    freqs: dict[int, int | None] = {}
    for line in out.splitlines():
        m = re.match(r"\s*cpu(\d+)\s*(\d+)?\s*$", line)
        if m:
            freqs[int(m.group(1))] = int(m.group(2)) if m.group(2) else None
    return [freqs.get(i) for i in range(max(freqs) + 1)] if freqs else []


def read_device_info(device: Device) -> DeviceInfo:
    prop = device.getprop
    hardware = prop("ro.hardware")
    soc = prop("ro.soc.model") or prop("ro.board.platform") or hardware
    emulator = "1" in (prop("ro.kernel.qemu"), prop("ro.boot.qemu")) or hardware in ("ranchu", "goldfish")
    return DeviceInfo(
        serial=device.serial,
        model=prop("ro.product.model"),
        manufacturer=prop("ro.product.manufacturer"),
        soc=soc,
        android_version=prop("ro.build.version.release"),
        sdk=prop("ro.build.version.sdk"),
        abi=prop("ro.product.cpu.abi"),
        cpu_max_freq_khz=read_cpu_max_freqs(device),
        emulator=emulator,
    )


def check_abi(info: DeviceInfo, profile: TargetProfile) -> list[str]:
    """Refuse a device the profile's binaries cannot run on; return notes for acceptable oddities."""
    check_target(profile)
    if info.abi == PHONE_ABI:
        if info.emulator:
            return [f"{info.serial} is an Android emulator: its timings measure the computer running it, not a phone."]
        return []
    if info.abi == EMULATOR_ABI:
        return [
            f"{info.serial} is an x86_64 device, not an arm64 phone (an emulator image, or the host standing in): "
            "its timings are not representative of a phone; use them to check that the model runs, not how fast."
        ]
    raise DeviceError(
        f"Target '{profile.name}' needs an {PHONE_ABI} device (or an {EMULATOR_ABI} emulator); "
        f"{info.serial} reports ro.product.cpu.abi={info.abi or '(empty)'}.",
        hint="Connect a 64-bit Arm phone, or choose another with --device adb:SERIAL.",
    )


def big_core_mask(freqs: list[int | None]) -> str | None:
    """taskset mask (hex, no 0x) of the cores faster than the slowest cluster; None without big.LITTLE.

    "Big cores" is what Android benchmarking means by ``taskset f0``: every core above the LITTLE
    cluster. On a tri-cluster SoC (4 LITTLE + 3 big + 1 prime) that keeps the four fast cores for four
    threads instead of pinning them all on the single prime core.
    """
    known = [f for f in freqs if f]
    if len(set(known)) < 2 or len(known) != len(freqs):
        return None
    slowest = min(known)
    mask = sum(1 << i for i, f in enumerate(freqs) if f and f > slowest)
    return format(mask, "x")


def check_target(profile: TargetProfile) -> None:
    """Only phone profiles (LiteRT) are benchmarked over adb."""
    if profile.device.kind != "phone" or profile.runtime.name != "litert":
        raise UsageError(
            f"Benchmarking over adb runs LiteRT on an Android phone; target '{profile.name}' is a "
            f"{profile.device.kind} running {profile.runtime.name}. Use --target android-arm64."
        )
