"""Reader for the IDX files MNIST ships as (``t10k-images-idx3-ubyte.gz`` and friends).

Tests, examples and benchmarks calibrate and evaluate on the real MNIST test set; reading its
original files directly (no keras.datasets download, no TensorFlow import) keeps them offline and
light. IDX: 2 zero bytes, a type code, the number of dimensions, big-endian uint32 sizes, then data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError

#: IDX type code -> big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as a native-endian numpy array."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"IDX file '{path}' was not found.", hint="Pass the path of an existing .gz file.")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CalibrationDataError(
            f"Cannot read '{path}' as a gzipped IDX file ({type(exc).__name__}: {exc}).",
            hint="Re-download the file; its md5 should match the published one.",
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CalibrationDataError(
            f"'{path}' is not an IDX file: it starts with bytes {raw[:4].hex() or '(empty)'}, "
            "expected 0000 + type code + dimension count.",
            hint="Pass the original MNIST files, e.g. t10k-images-idx3-ubyte.gz.",
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected or len(dims) != ndim:
        raise CalibrationDataError(
            f"IDX file '{path}' is truncated or corrupt: header says shape {dims} ({expected} bytes), "
            f"file holds {max(len(raw) - header, 0)} bytes of data.",
            hint="Re-download the file.",
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_mnist_idx(images_gz: Path, labels_gz: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images as uint8 ``(N, 28, 28)`` and labels as uint8 ``(N,)``, checked to pair up."""
    images = read_idx(Path(images_gz))
    labels = read_idx(Path(labels_gz))
    if images.ndim != 3 or labels.ndim != 1:
        raise CalibrationDataError(
            f"Expected an images file of shape (N, rows, cols) and a labels file of shape (N,); "
            f"received {images.shape} and {labels.shape}.",
            hint="Pass the images file first, then the labels file.",
        )
    if images.shape[0] != labels.shape[0]:
        raise CalibrationDataError(
            f"MNIST images and labels must pair up; received {images.shape[0]} images and {labels.shape[0]} labels.",
            hint="Pass files of the same split (both t10k- or both train-).",
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.uint8, copy=False)
