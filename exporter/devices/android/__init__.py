"""Benchmark a .tflite on an Android phone or emulator with TensorFlow Lite's ``benchmark_model`` over adb.

``bench_on_device(model, "android-arm64", "adb")`` pushes the model and the binary to
``/data/local/tmp``, runs them with the profile's settings, parses the tool's output and removes
everything it pushed. The device layer is a five-method protocol, so this computer can stand in for a
phone (``device="local"``) and tests prove the whole flow without one. See docs/android.md.
"""

from __future__ import annotations

from .adb import AdbBinaryDevice, AdbutilsDevice, find_device, find_devices
from .benchmark_model import (
    BenchmarkModelOptions,
    BenchmarkModelOutput,
    DelegateReport,
    LatencyStats,
    OpProfile,
    OpTiming,
    parse_benchmark_output,
)
from .binary import locate_benchmark_binary
from .device import ADB_METHOD, DEVICE_TMP, Device, DeviceDisconnected, DeviceTimeout
from .info import DeviceInfo, big_core_mask, read_device_info
from .local import LocalDevice
from .run import DEFAULT_TIMEOUT_S, DeviceBenchmark, bench_on_device

__all__ = [
    "ADB_METHOD",
    "DEFAULT_TIMEOUT_S",
    "DEVICE_TMP",
    "AdbBinaryDevice",
    "AdbutilsDevice",
    "BenchmarkModelOptions",
    "BenchmarkModelOutput",
    "DelegateReport",
    "Device",
    "DeviceBenchmark",
    "DeviceDisconnected",
    "DeviceInfo",
    "DeviceTimeout",
    "LatencyStats",
    "LocalDevice",
    "OpProfile",
    "OpTiming",
    "bench_on_device",
    "big_core_mask",
    "find_device",
    "find_devices",
    "locate_benchmark_binary",
    "parse_benchmark_output",
    "read_device_info",
]
