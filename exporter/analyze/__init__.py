"""Analyses of an exported model that need no interpreter: memory estimates."""

from .memory import MemoryEstimate, TensorBytes, estimate_memory, live_ranges

__all__ = ["MemoryEstimate", "TensorBytes", "estimate_memory", "live_ranges"]
