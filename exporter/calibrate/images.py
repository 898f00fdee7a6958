"""A folder of images as calibration (or evaluation) samples.

Vision models are calibrated on the pictures they will see, and most users have a folder of them
rather than an .npy. Listing is separate from decoding so the seeded subset is drawn from the file
list first and only the selected images are decoded: a folder of 50,000 photos costs 200 decodes.
Pixels are scaled exactly as the user says (or 0..1 with a warning): a wrong scale does not fail,
it silently yields a model whose ranges are off by 255x, so the assumption is always stated.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError
from ..load.model import TensorSpec
from .validate import shape_str

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
LABELS_FILE = "labels.txt"
_MODES = {1: ("L", "grayscale"), 3: ("RGB", "RGB"), 4: ("RGBA", "RGBA")}
_RANGE_HINT = "Pass input_range '0,1', '-1,1' or '0,255' (CLI: --input-range), or per-channel mean/std."


@dataclass
class ImageListing:
    """The images of a folder in a fixed order, with labels when the folder carries them."""

    root: Path
    files: list[Path]  # relative to root, sorted
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    label_source: str = ""  # "class sub-folders" | "labels.txt" | ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageLayout:
    """Where height, width and channels sit in the model input."""

    height: int
    width: int
    channels: int
    layout: str  # "NHWC" | "NCHW" | "NHW"


@dataclass(frozen=True)
class Scaling:
    """How 0..255 pixels become model inputs: ``pixels * scale + offset`` per channel."""

    scale: np.ndarray
    offset: np.ndarray
    description: str  # e.g. "scaled to 0..1"
    assumed: bool  # True when the user gave neither a range nor mean/std


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(root: Path) -> ImageListing:
    """All images under ``root`` (recursive, sorted by relative path), labels from sub-folders or labels.txt."""
    files: list[Path] = []
    skipped: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        here = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if not _visible(name):
                continue
            rel = here / name
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                files.append(rel)
            elif not (rel == Path(LABELS_FILE)):
                skipped.append(rel)
    files.sort(key=lambda p: p.as_posix())
    listing = ImageListing(root=root, files=files)
    if skipped:
        listing.warnings.append(
            f"skipped {len(skipped)} non-image file(s) in {root} (e.g. {skipped[0].as_posix()}); "
            f"images are {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    if not files:
        raise CalibrationDataError(
            f"Image folder '{root}' holds no images ({len(skipped)} other file(s)); calibration needs at least 1.",
            hint=f"Put .png/.jpg/.bmp/.gif/.webp files in it, or class sub-folders of them ({', '.join(sorted(IMAGE_EXTENSIONS))}).",
        )
    labels_txt = root / LABELS_FILE
    if labels_txt.is_file():
        _labels_from_file(listing, labels_txt)
    else:
        _labels_from_folders(listing)
    return listing


def _labels_from_folders(listing: ImageListing) -> None:
    """``root/cat/*.jpg``, ``root/dog/*.jpg``: label = index of the class in sorted order."""
    top = [f for f in listing.files if len(f.parts) == 1]
    if len(top) == len(listing.files):
        return
    if top:
        listing.warnings.append(
            f"no labels taken from class sub-folders of {listing.root}: {len(top)} image(s) sit at its top level "
            f"(e.g. {top[0].as_posix()})"
        )
        return
    classes = sorted({f.parts[0] for f in listing.files})
    index = {c: i for i, c in enumerate(classes)}
    listing.labels = np.asarray([index[f.parts[0]] for f in listing.files], dtype=np.int64)
    listing.classes = classes
    listing.label_source = "class sub-folders"


def _labels_from_file(listing: ImageListing, path: Path) -> None:
    """``labels.txt``: one ``filename label`` per line; integer labels, or class names sorted to indices."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationDataError(
            f"Cannot read '{path}' ({type(exc).__name__}: {exc}).", hint="Save it as UTF-8 text."
        ) from exc
    given: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(None, 1)
        if len(parts) != 2:
            raise CalibrationDataError(
                f"'{path}' line {number} must be 'filename label'; received '{text[:80]}'.",
                hint="Write one image per line: its path relative to the folder, a space, its label.",
            )
        given[Path(parts[0]).as_posix()] = parts[1]
    names = [f.as_posix() for f in listing.files]
    missing = [n for n in names if n not in given]
    if missing:
        raise CalibrationDataError(
            f"'{path}' gives no label for {len(missing)} of {len(names)} images (first: {missing[0]}).",
            hint="Add a 'filename label' line for every image, or remove labels.txt.",
        )
    values = [given[n] for n in names]
    try:
        listing.labels = np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        classes = sorted(set(values))
        listing.classes = classes
        listing.labels = np.asarray([classes.index(v) for v in values], dtype=np.int64)
    listing.label_source = LABELS_FILE
    unused = len(set(given) - set(names))
    if unused:
        listing.warnings.append(f"{path} names {unused} file(s) that are not images in the folder")


def image_layout(spec: TensorSpec) -> ImageLayout:
    """Height, width and channels of an image input: NHWC (Keras), NCHW, or NHW (grayscale)."""
    shape = tuple(spec.shape)

    def static(*dims: int | None) -> bool:
        return all(isinstance(d, int) and d > 0 for d in dims)

    if len(shape) == 4 and static(shape[3]) and shape[3] in _MODES and static(shape[1], shape[2]):
        return ImageLayout(shape[1], shape[2], shape[3], "NHWC")
    if len(shape) == 4 and static(shape[1]) and shape[1] in _MODES and static(shape[2], shape[3]):
        return ImageLayout(shape[2], shape[3], shape[1], "NCHW")
    if len(shape) == 3 and static(shape[1], shape[2]):
        return ImageLayout(shape[1], shape[2], 1, "NHW")
    raise CalibrationDataError(
        f"An image folder needs a model input of static shape (1, H, W, C) with C in 1, 3 or 4; "
        f"input '{spec.name}' has shape {shape_str(shape)}.",
        hint="Export the model with a fixed input size, or pass the samples as an .npy/.npz array.",
    )


def _parse_range(text: str) -> tuple[float, float]:
    """``"0,1"``, ``"-1,1"``, ``"0,255"`` (also ``"0..1"``) -> (low, high)."""
    parts = text.replace("..", ",").split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError as exc:
        raise CalibrationDataError(f"input_range must be 'low,high'; received '{text}'.", hint=_RANGE_HINT) from exc
    if not low < high:
        raise CalibrationDataError(f"input_range needs low < high; received '{text}'.", hint=_RANGE_HINT)
    return low, high


def _per_channel(values: list[float], channels: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size not in (1, channels):
        raise CalibrationDataError(
            f"{name} needs 1 or {channels} values (one per channel); received {array.size}: {list(values)}.",
            hint=f"Pass e.g. {name} {' '.join(['127.5'] * channels)} (on 0..255 pixel values).",
        )
    return np.broadcast_to(array, (channels,)).astype(np.float64)


def make_scaling(input_range: str | None, mean: list[float] | None, std: list[float] | None, channels: int) -> Scaling:
    """Turn the user's range or mean/std into one affine map on 0..255 pixels."""
    if input_range is not None and (mean is not None or std is not None):
        raise CalibrationDataError(
            f"Pass either input_range or mean/std, not both; received input_range '{input_range}' and mean/std.",
            hint="input_range covers '0,1', '-1,1', '0,255'; mean/std cover per-channel normalization.",
        )
    if mean is not None or std is not None:
        m = _per_channel(mean if mean is not None else [0.0], channels, "mean")
        s = _per_channel(std if std is not None else [1.0], channels, "std")
        if (s == 0).any():
            raise CalibrationDataError(
                f"std must not be 0; received {list(std or [])}.", hint="Pass the std per channel."
            )
        fmt = lambda a: "[" + ", ".join(f"{v:g}" for v in a) + "]"  # noqa: E731
        return Scaling(1.0 / s, -m / s, f"normalized (pixel - mean) / std with mean {fmt(m)}, std {fmt(s)}", False)
    low, high = _parse_range(input_range) if input_range is not None else (0.0, 1.0)
    scale = np.full(channels, (high - low) / 255.0)
    return Scaling(scale, np.full(channels, low), f"scaled to {low:g}..{high:g}", input_range is None)


def decode_images(
    listing: ImageListing,
    indices: list[int],
    layout: ImageLayout,
    scaling: Scaling,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """Decode, orient, convert, resize (bilinear) and scale the selected images into one float32 array.

    A colour image fed to a 1-channel model (or a grey one to a colour model) is converted without
    error, so the conversion is stated in ``warnings``: a model trained on one colour channel, or
    on another grey conversion, calibrates to the wrong ranges and nothing else would say so.
    """
    from PIL import Image, ImageOps

    mode = _MODES[layout.channels][0]
    out = np.empty((len(indices), layout.height, layout.width, layout.channels), dtype=np.float32)
    converted: list[str] = []  # PIL modes of the images whose colour kind the model's channels change
    for row, index in enumerate(indices):
        path = listing.root / listing.files[index]
        try:
            with Image.open(path) as image:
                image.seek(0)  # first frame of an animated GIF/WebP
                kind = _colour_kind(image)
                if kind != ("grey" if layout.channels == 1 else "colour"):
                    converted.append(image.mode)
                picture = ImageOps.exif_transpose(image).convert(mode)
                if picture.size != (layout.width, layout.height):
                    picture = picture.resize((layout.width, layout.height), Image.Resampling.BILINEAR)
                pixels = np.asarray(picture, dtype=np.float32)
        except Exception as exc:  # PIL raises many types for broken files; every one means "cannot decode"
            raise CalibrationDataError(
                f"Cannot decode image '{path}' ({type(exc).__name__}: {exc}).",
                hint="Remove or replace that file; its extension says image but its bytes do not.",
            ) from exc
        out[row] = pixels.reshape(layout.height, layout.width, layout.channels)
    if converted and warnings is not None:
        warnings.append(_conversion_warning(listing.root, converted, layout.channels))
    out = out * scaling.scale.astype(np.float32) + scaling.offset.astype(np.float32)
    if layout.layout == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    elif layout.layout == "NHW":
        out = out[..., 0]
    return np.ascontiguousarray(out, dtype=np.float32)


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _colour_kind(image) -> str:
    """Whether the file holds a "grey" or a "colour" picture, whatever the channels the model wants."""
    if image.mode in _GREY_MODES:
        return "grey"
    if image.mode in ("P", "PA"):  # a palette of grey entries is a grey image
        palette = image.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return "grey" if rgb.size and (rgb == rgb[:, :1]).all() else "colour"
    return "colour"


def _conversion_warning(root: Path, modes_seen: list[str], channels: int) -> str:
    # No counts or file names: calibration and evaluation drawn from one folder then say it once.
    modes = ", ".join(sorted(set(modes_seen)))
    if channels == 1:
        return (
            f"images in {root} are colour ({modes}) and were converted to 1-channel grayscale for the model's "
            "1-channel input (PIL luma: 0.299 R + 0.587 G + 0.114 B); if the model was trained on another "
            "conversion or on one colour channel, convert the images first, or pass the samples as an .npy"
        )
    return (
        f"images in {root} are grayscale ({modes}) and were copied into all {channels} channels of the model's "
        "colour input; if the model was trained on colour images, use colour images"
    )


def describe(count: int, layout: ImageLayout, scaling: Scaling) -> str:
    """The report's preprocessing line, e.g. ``2 images resized to 96x96 RGB, scaled to 0..1``."""
    colour = _MODES[layout.channels][1]
    layout_note = "" if layout.layout == "NHWC" else f" ({layout.layout})"
    return f"{count} images resized to {layout.height}x{layout.width} {colour}{layout_note}, {scaling.description}"


def assumed_range_warning(root: Path) -> str:
    """Said every time pixels are scaled to 0..1 by assumption: a wrong guess fails silently."""
    return (
        f"images in {root} were scaled to 0..1 because no input range was given; if the model was trained on "
        "-1..1 or 0..255 pixels or with mean/std normalization, pass input_range (--input-range -1,1) or mean/std"
    )
