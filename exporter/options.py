"""How the tool runs, as opposed to what the device is (:mod:`exporter.profiles`).

Vela draws the same line: the architecture describes the hardware, compiler options describe the
tool's behaviour. An ``ExportOptions`` never changes what a target accepts, only how edgeport gets
there and where it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .profiles import IO_DTYPES

INPUT_RANGES = ("0,1", "-1,1", "0,255")
DENSE_QUANT = ("auto", "per-channel", "per-tensor")
LUT_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``edgeport export`` / :func:`exporter.export`; defaults are the CLI's."""

    output_dir: Path | None = None
    calib: str | None = None
    calib_samples: int = 200
    seed: int = 0
    eval: str | None = None
    eval_samples: int = 1000
    allow_overlap: bool = False
    per_layer: bool = False
    formats: tuple[str, ...] | None = None
    onnx_opset: int = 17
    onnx_dynamic_batch: bool = False
    onnx_calibrate: str = "minmax"
    #: Also write model_int8.tflite.gz (exporter.analyze.compressed.gzip_best) for compressed downloads.
    gzip: bool = False
    bench: bool = False
    bench_runs: int | None = None
    bench_device: str | None = None
    benchmark_binary: Path | None = None
    edgetpu_compat: bool = False
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    input_shape: tuple[int, ...] | None = None
    input_range: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    io_dtype: str | None = None
    per_channel: bool | None = None
    unsafe: bool = False
    force: bool = False
    keep_workdir: bool = False
    #: --prune: an exporter.compress.PruneSpec applied right after load (see exporter/compress).
    prune: Any = None
    #: --cluster K: every int8 weight tensor keeps at most K values per output channel, chosen after
    #: quantization (exporter.compress.int8_cluster); TFLite Micro targets store them LUT-compressed.
    cluster: int | None = None
    #: --train DATA: with --cluster, k-means per kernel fine-tuned with the centroids shared, before conversion;
    #: with the accuracy guard, the data of its last remedy, quantization-aware training.
    train: str | None = None
    train_samples: int = 60000
    epochs: int = 2
    #: --lut auto|on|off: TFLite Micro targets store clustered weights LUT-compressed (exporter.steps.flash).
    lut: str = "auto"
    #: --lut-max-decoded BYTES: tensors whose decoded int8 form is larger stay plain (DECODE's RAM cost).
    lut_max_decoded: int | None = None
    #: --keep-zero-points: TFLite Micro files keep one zero point per channel, so LiteRT loads them too
    #: (by default they store it once per tensor: 8 B per channel less flash; exporter.convert.compact).
    keep_zero_points: bool = False
    # Microcontroller firmware (Cortex-M / Ethos-U targets): see docs/firmware.md.
    c_name: str | None = None
    depfile: Path | None = None
    dense_quant: str = "auto"
    arena_margin: float = 0.10
    flash_budget: int | None = None
    ram_budget: int | None = None

    def __post_init__(self) -> None:
        if self.calib_samples < 1:
            raise UsageError(f"--calib-samples must be at least 1; received {self.calib_samples}.")
        if self.max_accuracy_drop is not None and self.min_agreement is not None:
            raise UsageError("Pass either --max-accuracy-drop or --min-agreement, not both.")
        if self.formats is not None:
            unknown = [f for f in self.formats if f not in ("tflite", "onnx")]
            if unknown or not self.formats:
                raise UsageError(
                    f"--format takes tflite, onnx or tflite,onnx; received {','.join(self.formats) or 'nothing'}."
                )
        if self.bench_runs is not None and self.bench_runs < 1:
            raise UsageError(f"--bench-runs must be at least 1; received {self.bench_runs}.")
        if self.eval_samples < 1:
            raise UsageError(f"--eval-samples must be at least 1; received {self.eval_samples}.")
        if self.io_dtype is not None and self.io_dtype not in IO_DTYPES:
            raise UsageError(f"--io-dtype must be one of {', '.join(IO_DTYPES)}; received {self.io_dtype!r}.")
        if self.input_range is not None and self.input_range not in INPUT_RANGES:
            raise UsageError(f"--input-range must be one of {', '.join(INPUT_RANGES)}; received {self.input_range!r}.")
        if (self.mean is None) != (self.std is None):
            raise UsageError("--mean and --std go together; pass both or neither.")
        if self.std is not None and any(s == 0 for s in self.std):
            raise UsageError(f"--std must not contain 0; received {list(self.std)}.")
        if self.input_range is not None and self.mean is not None:
            raise UsageError("Pass either --input-range or --mean/--std, not both.")
        if self.input_shape is not None and any(d <= 0 for d in self.input_shape):
            raise UsageError(f"--input-shape needs positive sizes; received {list(self.input_shape)}.")
        if self.cluster is not None and not 2 <= self.cluster <= 128:
            raise UsageError(
                f"--cluster needs 2..128 values per channel; received {self.cluster}.",
                hint="TFLite Micro's lookup tables take 1..7-bit indices: 16 (4-bit) is a good start.",
            )
        if self.lut not in LUT_MODES:
            raise UsageError(f"--lut must be one of {', '.join(LUT_MODES)}; received {self.lut!r}.")
        if self.lut_max_decoded is not None and self.lut_max_decoded <= 0:
            raise UsageError(f"--lut-max-decoded needs a positive byte count; received {self.lut_max_decoded}.")
        self._check_firmware()

    def _check_firmware(self) -> None:
        if self.dense_quant not in DENSE_QUANT:
            raise UsageError(f"--dense-quant must be one of {', '.join(DENSE_QUANT)}; received {self.dense_quant!r}.")
        if self.dense_quant == "per-tensor" and self.per_channel is True:
            raise UsageError("--dense-quant per-tensor contradicts per-channel weights.", hint="Drop one of them.")
        if not 0 <= self.arena_margin <= 10:
            raise UsageError(
                f"--arena-margin must be a percentage from 0 to 1000; received {100 * self.arena_margin:g}."
            )
        for flag, value in (("--flash-budget", self.flash_budget), ("--ram-budget", self.ram_budget)):
            if value is not None and value <= 0:
                raise UsageError(f"{flag} must be a positive number of bytes; received {value}.")
        if self.c_name is not None:
            from .devices.cortex_m.csource import Names

            Names.from_option(self.c_name)


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,96,96,3`` or ``1x96x96x3`` -> (1, 96, 96, 3)."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise UsageError(f"--input-shape must be integers like 1,96,96,3; received {text!r}.") from exc
    if not shape:
        raise UsageError(f"--input-shape must be integers like 1,96,96,3; received {text!r}.")
    return shape


def parse_bytes(text: str, flag: str) -> int:
    """``524288``, ``512K``/``512KiB`` or ``1.5M``/``1.5MiB`` -> bytes (K and M are 1024-based)."""
    units = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2}
    cleaned = text.strip().replace("_", "").replace(",", "").upper()
    number = cleaned.rstrip("KMIB")
    unit = cleaned[len(number) :]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{flag} must be bytes like 524288, 512K or 1.5M; received {text!r}.") from exc
    return int(value)


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} must be numbers like 127.5 or 123.7,116.3,103.5; received {text!r}.") from exc
