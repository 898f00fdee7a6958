"""The benchmark stage: time a model through its target's own interpreter on this host, and measure memory.

``benchmark(model, target)`` runs LiteRT (phones, the Edge TPU's CPU part), TFLite Micro (Cortex-M) or
onnxruntime (``.onnx``) in a child process and returns a :class:`BenchmarkResult`; ``measure_arena``
finds the exact TFLite Micro arena a model needs. Host timings are not device timings, and every
result says so.
"""

from __future__ import annotations

from .api import benchmark, measure_arena
from .result import ArenaMeasurement, BenchmarkResult, Latency

__all__ = ["ArenaMeasurement", "BenchmarkResult", "Latency", "benchmark", "measure_arena"]
