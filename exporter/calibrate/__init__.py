"""Calibrate stage: representative datasets for full-int8 conversion, and evaluation data.

Light on purpose (numpy and Pillow only, no TensorFlow): the data is read and checked before the
converter starts, so a bad file fails in a second with a one-line message instead of deep inside
the calibrator.
"""

from __future__ import annotations

from .api import load_calibration, synthetic_calibration
from .dataset import CalibrationSet
from .mnist import load_mnist_idx
from .sources import MODULE_READ_FACTOR
from .validate import select_indices, split_indices

__all__ = [
    "MODULE_READ_FACTOR",
    "CalibrationSet",
    "load_calibration",
    "load_mnist_idx",
    "select_indices",
    "split_indices",
    "synthetic_calibration",
]
