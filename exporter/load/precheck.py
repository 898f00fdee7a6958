"""Cheap structural checks of a model file, run before TensorFlow is imported.

Importing TensorFlow and Keras costs 5 to 30 s; a file that is empty, truncated or of the wrong kind
should be refused in well under a second, before that price is paid. These checks read only headers
and (for ``.keras``) the zip directory and ``config.json``: no numpy, no h5py, no TensorFlow. They
refuse only what the real loader would refuse too, so a file passing them may still fail later, but a
file failing them never would have loaded.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputModelError
from .shapes import first_line

SUPPORTED_FORMATS = ".keras, .h5 (or .hdf5), a SavedModel directory, or .tflite"

KERAS_SUFFIXES = frozenset({".keras"})
H5_SUFFIXES = frozenset({".h5", ".hdf5"})
TFLITE_SUFFIXES = frozenset({".tflite"})

#: The 8-byte HDF5 format signature; it sits at offset 0 or, after a user block, at 512, 1024, 2048...
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_RESAVE_KERAS = "Re-save the model with model.save('model.keras'), or copy the file again; it may be truncated."
_RESAVE_H5 = (
    "Copy or download the file again (compare its size with the original), or re-save it with "
    "model.save('model.keras')."
)


def model_kind(path: Path) -> str:
    """``saved_model``, ``keras``, ``h5`` or ``tflite`` by what ``path`` is; refuses other suffixes."""
    if path.is_dir():
        return "saved_model"
    suffix = path.suffix.lower()
    for kind, suffixes in (("keras", KERAS_SUFFIXES), ("h5", H5_SUFFIXES), ("tflite", TFLITE_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise InputModelError(
        f"Unsupported model file {path} (suffix '{path.suffix or 'none'}').",
        hint=f"edgeport accepts {SUPPORTED_FORMATS}.",
    )


def precheck_model(path: str | Path) -> str:
    """Refuse a missing, empty, truncated or mislabelled model file in milliseconds; return its kind.

    Call it before :func:`exporter.tfimport.import_tensorflow_quietly`. Raises :class:`InputModelError`
    (exit 2) naming the file, what is wrong and what to do.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputModelError(f"Model file {path} does not exist.", hint=f"Pass a path to a {SUPPORTED_FORMATS} model.")
    kind = model_kind(path)
    if kind != "saved_model" and _size(path) == 0:
        raise InputModelError(
            f"Model file {path} is empty (0 bytes).",
            hint="Copy or download it again, or re-save the model (model.save('model.keras')); "
            "an interrupted copy or save leaves such files.",
        )
    if kind == "saved_model":
        from .saved_model import is_saved_model_dir

        if not is_saved_model_dir(path):
            raise InputModelError(
                f"{path} is a directory but not a SavedModel (no saved_model.pb inside).",
                hint="Pass a SavedModel directory, a .keras or .h5 file, or a .tflite file.",
            )
    elif kind == "keras":
        keras_archive_config(path)
    elif kind == "h5":
        check_hdf5_file(path)
    # .tflite: its reader verifies the flatbuffer without TensorFlow, in milliseconds
    return kind


# --- .keras ------------------------------------------------------------------------------------------


def keras_archive_config(path: Path) -> Any:
    """The parsed ``config.json`` of a Keras 3 ``.keras`` zip; refuses anything that is not one."""
    if not zipfile.is_zipfile(path):
        hint = "Save the model with model.save('model.keras') (Keras 3) and pass that file."
        if hdf5_superblock_offset(path) is not None:
            hint = "It is an HDF5 file: rename it to .h5 so edgeport reads it as a legacy Keras model."
        raise InputModelError(f"File {path} is not a valid .keras archive (not a zip file).", hint=hint)
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise InputModelError(
                    f"File {path} is not a valid .keras archive (a zip without config.json).",
                    hint="Save the model with model.save('model.keras') and pass that file.",
                )
            config = json.loads(archive.read("config.json"))
    except InputModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise InputModelError(
            f"File {path} is not a valid .keras archive ({first_line(exc)}).", hint=_RESAVE_KERAS
        ) from exc
    if not isinstance(config, dict) or "class_name" not in config:
        raise InputModelError(
            f"File {path} is not a valid .keras archive (its config.json does not describe a Keras model).",
            hint="Save the model with model.save('model.keras') and pass that file.",
        )
    return config


# --- .h5 ---------------------------------------------------------------------------------------------


def hdf5_superblock_offset(path: Path) -> int | None:
    """Where the HDF5 signature is (0, 512, 1024, ...), or None when the file is not HDF5."""
    try:
        size = _size(path)
        with path.open("rb") as handle:
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                handle.seek(offset)
                if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return offset
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return None
    return None


def check_hdf5_file(path: Path) -> None:
    """Refuse a file that is not HDF5, or whose superblock records more bytes than the file holds.

    The end-of-file address in the superblock is what HDF5 itself compares when it reports
    "truncated file"; reading it here needs a few dozen bytes instead of h5py and TensorFlow.
    """
    at = hdf5_superblock_offset(path)
    if at is None:
        hint = "Pass a Keras model saved with model.save('model.h5') or model.save('model.keras')."
        if zipfile.is_zipfile(path):
            hint = "It is a zip file: if it is a Keras 3 archive, rename it to .keras."
        raise InputModelError(f"File {path} is not an HDF5 file.", hint=hint)
    size = _size(path)
    stored = _stored_eof(path, at)
    if stored is not None and size < stored:
        raise InputModelError(
            f"HDF5 file {path} is truncated: it holds {size:,} bytes, its HDF5 superblock says {stored:,}.",
            hint=_RESAVE_H5,
        )


def _stored_eof(path: Path, at: int) -> int | None:
    """The end-of-file address the superblock at ``at`` records (versions 0 to 3), in bytes."""
    with path.open("rb") as handle:
        handle.seek(at)
        head = handle.read(128)
    if len(head) < 16:
        return at + 128  # not even a whole superblock: any real file is longer
    version = head[8]
    if version in (0, 1):
        offsets = head[13]
        eof_at = 24 + (4 if version == 1 else 0) + 2 * offsets  # after the base and free-space addresses
    elif version in (2, 3):
        offsets = head[9]
        eof_at = 12 + 2 * offsets  # after the base and superblock-extension addresses
    else:
        return None  # a future superblock version: leave the judgement to HDF5 itself
    if offsets not in (2, 4, 8) or len(head) < eof_at + offsets:
        return at + eof_at + offsets if offsets in (2, 4, 8) else None
    eof = int.from_bytes(head[eof_at : eof_at + offsets], "little")
    # HDF5 compares the file's size with this value as stored (a user block included), so do we
    return None if eof == (1 << (8 * offsets)) - 1 else eof


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
