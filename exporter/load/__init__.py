"""The load stage: any supported model file in, one :class:`SourceModel` with static batch-1 inputs out.

Dispatch is by what the path is (directory or suffix), not by trial and error, so a wrong file gets
an error about the format the user meant instead of the last loader tried.
"""

from __future__ import annotations

from pathlib import Path

from .model import SourceModel, TensorSpec
from .precheck import SUPPORTED_FORMATS, precheck_model
from .saved_model import LOADER_COMPAT_V1, LOADER_V2, signature_inputs, signature_outputs

__all__ = [
    "LOADER_COMPAT_V1",
    "LOADER_V2",
    "SUPPORTED_FORMATS",
    "SourceModel",
    "TensorSpec",
    "load_model",
    "precheck_model",
    "signature_inputs",
    "signature_outputs",
]


def load_model(path: str | Path, *, input_shape: tuple[int, ...] | None = None, unsafe: bool = False) -> SourceModel:
    """Load a model for export; raises :class:`InputModelError` (exit 2) on any bad input.

    ``input_shape`` (batch first, batch 1) fixes unknown input sizes of a single-input model.
    ``unsafe`` lifts Keras safe mode, letting Python code stored in the file (Lambda layers) run.
    Callers that import TensorFlow first should call :func:`precheck_model` before that import.
    """
    path = Path(path).expanduser()
    kind = precheck_model(path)
    if kind == "saved_model":
        from .saved_model import load_saved_model

        return load_saved_model(path, input_shape=input_shape)
    if kind == "keras":
        from .keras_files import load_keras_archive

        return load_keras_archive(path, input_shape=input_shape, unsafe=unsafe)
    if kind == "h5":
        from .keras_files import load_h5

        return load_h5(path, input_shape=input_shape, unsafe=unsafe)
    from .tflite_file import load_tflite

    return load_tflite(path, input_shape=input_shape)
