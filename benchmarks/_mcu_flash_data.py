"""Inputs and checks for benchmarks/mcu_flash.py: the VWW agreement image set, distinct values per channel.

Two photos cannot measure top-1 agreement (one flipped answer is 50%). The set here is fixed and
seeded: the two photos whole, then variants alternating between them, each a random square crop
(side 50-100% of the photo's shorter side, anywhere in the photo), mirrored with probability 1/2,
resized to 96x96 (bilinear) and scaled to 0..1, then multiplied by a brightness factor in 0.6-1.4 and
clipped to 0..1. The same seed always gives the same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 16
SIDE = 96
CROP = (0.5, 1.0)
BRIGHTNESS = (0.6, 1.4)
PHOTO_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg")
#: (op, weight input index, channel axis when quantized per channel)
WEIGHT_INPUTS = {"CONV_2D": (1, 0), "DEPTHWISE_CONV_2D": (1, 3), "FULLY_CONNECTED": (1, 0), "TRANSPOSE_CONV": (1, 0)}


def _photos(folder: Path) -> list[Any]:
    from PIL import Image

    photos = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES):
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    if not photos:
        raise FileNotFoundError(f"no photos in {folder}")
    return photos


def _to_input(image: Any, brightness: float = 1.0) -> np.ndarray:
    from PIL import Image

    resized = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32) / 255.0 * brightness, 0.0, 1.0)


def vww_image_set(folder: Path, count: int) -> tuple[np.ndarray, str]:
    """``count`` images of shape 96x96x3 in 0..1 (float32), and the sentence that says how they were made."""
    from PIL import Image

    photos = _photos(folder)
    rng = np.random.default_rng(SEED)
    images = [_to_input(p) for p in photos]
    while len(images) < count:
        photo = photos[len(images) % len(photos)]
        width, height = photo.size
        side = rng.uniform(*CROP) * min(width, height)
        x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
        crop = photo.crop((round(x0), round(y0), round(x0 + side), round(y0 + side)))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        images.append(_to_input(crop, rng.uniform(*BRIGHTNESS)))
    names = ", ".join(f"{p.width}x{p.height}" for p in photos)
    how = (
        f"{count} images from the {len(photos)} photos in assets/images ({names}): the photos whole, resized to "
        f"96x96, then {count - len(photos)} variants alternating between them, each a random square crop "
        f"(side {CROP[0]:.0%}-{CROP[1]:.0%} of the shorter side, random position), mirrored with probability 1/2, "
        f"resized to 96x96 (bilinear), scaled to 0..1, times a brightness factor uniform in "
        f"{BRIGHTNESS[0]}-{BRIGHTNESS[1]}, clipped to 0..1 (numpy default_rng({SEED}); "
        "benchmarks/_mcu_flash_data.py)"
    )
    return np.stack(images).astype(np.float32), how


def distinct_per_channel(model: bytes, clustered: set[str] | None = None) -> dict[str, Any]:
    """The most distinct int8 values any output channel of a conv/FC weight tensor holds in ``model``.

    Per channel along the quantized axis when the tensor has one scale per channel (axis 0, or 3 for
    depthwise filters), else over the whole tensor: the value tables LUT compression would build.
    With ``clustered`` (the tensor names the export's report lists as clustered) only those count, and
    ``left`` says how many weight tensors the export kept exact (a table would not have paid there)."""
    from exporter.verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    worst, tensors, seen, left = 0, 0, set(), 0
    for op in graph.ops:
        if op.name not in WEIGHT_INPUTS or len(op.inputs) <= WEIGHT_INPUTS[op.name][0]:
            continue
        index, axis = WEIGHT_INPUTS[op.name]
        tensor = graph.tensor(op.inputs[index])
        values = graph.constant(tensor)
        if values is None or tensor.dtype != "int8" or tensor.index in seen:
            continue
        seen.add(tensor.index)
        if clustered is not None and tensor.name not in clustered:
            left += 1
            continue
        tensors += 1
        if len(tensor.scale) > 1:
            moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
            worst = max(worst, max(np.unique(channel).size for channel in moved))
        else:
            worst = max(worst, np.unique(values).size)
    return {"tensors": tensors, "max_distinct": worst, "left": left}
