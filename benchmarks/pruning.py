"""What pruning buys, measured side by side: dense vs 50% unstructured vs 2:4 vs channel-pruned, plus XNNPACK sparse.

Run from the repository root (needs ../shared/assets for MNIST):

    .venv/bin/python benchmarks/pruning.py

It trains a small MNIST CNN (two middle convs and a hidden Dense, ~48k weights) on a seeded 60% split
of the real MNIST test set, prunes it three ways with ``exporter.compress`` (each fine-tuned 2 epochs
on the same split), exports every variant with ``exporter.export`` for android-arm64 and
cortex-m55-ethos-u55, and writes benchmarks/pruning_results.md (atomically): float and int8 accuracy
on a disjoint 30% split, .tflite size, gzip -9 size, Vela flash/SRAM, and LiteRT host latency (int8,
1 thread, XNNPACK on, all four models interleaved in one fresh process).

A second experiment measures how far the compressed-size saving depends on the encoder: three
published MNIST CNNs besides ours, 50% pruned, compared under `gzip -9`, the .tflite.gz that
``export --gzip`` writes, xz, and the byte-entropy bound.

A third experiment answers "does LiteRT's XNNPACK run sparse models faster?": a MobileNet-like float
model (3x3 stride-2 stem on 3 channels, depthwise + 1x1 convs, global mean: the subgraph XNNPACK's
sparse path accepts), its 1x1 convs pruned to 80%, converted with and without
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (which stores sparse weights behind DENSIFY ops), timed
the same way. The int8 pruned model is timed too.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: scripts/mnist_models.py: the data splits and CNNs the tests train, so results and tests share them.
sys.path.insert(0, str(ROOT / "scripts"))
ASSETS = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))
RESULTS = ROOT / "benchmarks" / "pruning_results.md"
VARIANTS = (("dense", None), ("50% unstructured", "0.5"), ("2:4", "2:4"), ("channels 50%", "channels:0.5"))


def gz(path: Path) -> int:
    from exporter.analyze.compressed import gzip9_size

    return gzip9_size(Path(path).read_bytes())


def interleaved_ms(paths: list[Path], rounds: int = 40, batch: int = 200) -> list[float]:
    """Median latency of each model, timed in one fresh child in alternating batches (compare_reference.interleave)."""
    code = (
        "import json,sys; sys.path.insert(0, sys.argv[1]); from compare_reference import interleave; "
        "print(json.dumps(interleave(sys.argv[4:], int(sys.argv[2]), int(sys.argv[3]))))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(rounds), str(batch), *map(str, paths)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["medians_ms"]


def mnist_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mnist_models import load_mnist_splits

    return load_mnist_splits(ASSETS)


def train_cnn(path: Path, train: tuple[np.ndarray, np.ndarray]) -> None:
    import keras
    from mnist_models import wide_cnn

    keras.utils.set_random_seed(0)
    model = wide_cnn()
    model.fit(*train, epochs=2, batch_size=64, verbose=0)
    model.save(path)


def run_variants(work: Path, data: dict) -> list[dict[str, Any]]:
    import keras

    from exporter import export
    from exporter.compress import compress
    from exporter.compress.finetune import accuracy

    for name, (x, y) in data.items():
        np.savez(work / f"{name}.npz", x=x, y=y)
    dense = work / "dense.keras"
    train_cnn(dense, data["train"])
    rows = []
    for label, prune in VARIANTS:
        model_path = dense
        steps = None
        if prune is not None:
            model_path = work / f"{prune.replace(':', '_')}.keras"
            # Fine-tune every pruned variant the same way; only 2:4 and unstructured prune the first conv
            # and the classifier too (--prune-all), channel pruning keeps them (their filters feed the input/output).
            report = compress(
                dense, prune, output=model_path, train=data["train"], eval=data["eval"], epochs=2,
                default_skips=prune == "channels:0.5",
            )  # fmt: skip
            steps = [s.to_dict() for s in report.steps]
        out = work / label.replace(" ", "_").replace("%", "pct").replace(":", "_")
        result = export(
            model_path, "android-arm64,cortex-m55-ethos-u55", calib=f"{work / 'calib.npz'}:x",
            eval=f"{work / 'eval.npz'}:x,y", output_dir=out, formats=("tflite",), gzip=True,
        )  # fmt: skip
        android = result.report("android-arm64")
        npu = result.report("cortex-m55-ethos-u55")
        section = npu.extra.get("cortex_m")
        section = section.to_dict() if hasattr(section, "to_dict") else (section or {})
        vela = section.get("vela") or {}
        sparsity = android.extra.get("sparsity") or {}
        tflite = out / "android-arm64" / "model_int8.tflite"
        rows.append(
            {
                "variant": label,
                "float_accuracy": accuracy(keras.saving.load_model(model_path), *data["eval"]),
                "int8_accuracy": android.fidelity["outputs"][0]["int8_accuracy"],
                "bytes": tflite.stat().st_size,
                "gzip_bytes": gz(tflite),
                "best_gzip_bytes": Path(f"{tflite}.gz").stat().st_size,
                "params": int(keras.saving.load_model(model_path).count_params()),
                "int8_zeros": (sparsity.get("int8_weights") or {}).get("sparsity", 0.0),
                "zeros_survived": (sparsity.get("zeros_survived") or {}).get("fraction"),
                "vela_flash": vela.get("off_chip_flash_bytes"),
                "vela_sram": vela.get("sram_bytes"),
                "vela_ms": vela.get("inference_ms"),
                "tflite": tflite,
                "steps": steps,
            }
        )
    latencies = interleaved_ms([r["tflite"] for r in rows])
    for row, ms in zip(rows, latencies, strict=True):
        row["latency_ms"] = ms
    return rows


#: Published MNIST CNNs (besides the one above), to see how far the gzip saving depends on the model.
STANDARD_CNNS = {
    "TF pruning guide (conv 12, dense 10)": (("conv", 12), ("pool",), ("flatten",), ("dense", 10)),
    "keras.io mnist_convnet": (("conv", 32), ("pool",), ("conv", 64), ("pool",), ("flatten",), ("dropout", 0.5), ("dense", 10)),
    "Keras 2 examples/mnist_cnn.py": (
        ("conv", 32), ("conv", 64), ("pool",), ("dropout", 0.25), ("flatten",), ("dense_relu", 128), ("dropout", 0.5),
        ("dense", 10),
    ),
}  # fmt: skip


def build_standard(spec: tuple) -> Any:
    import keras

    make = {
        "conv": lambda n: keras.layers.Conv2D(n, 3, activation="relu"),
        "pool": lambda: keras.layers.MaxPooling2D(2),
        "flatten": keras.layers.Flatten,
        "dropout": keras.layers.Dropout,
        "dense_relu": lambda n: keras.layers.Dense(n, activation="relu"),
        "dense": lambda n: keras.layers.Dense(n, activation="softmax"),
    }
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1), name="image"), *(make[k](*args) for k, *args in spec)])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def byte_entropy(blob: bytes) -> float:
    """Order-0 entropy in bits per byte: the floor for any coder that codes bytes independently."""
    counts = np.bincount(np.frombuffer(blob, np.uint8), minlength=256)
    p = counts[counts > 0] / len(blob)
    return float(-(p * np.log2(p)).sum())


def encoder_row(name: str, params: int, dense: Path, pruned: Path) -> dict[str, Any]:
    import lzma

    d, p = dense.read_bytes(), pruned.read_bytes()
    return {
        "model": name,
        "params": params,
        "bytes": len(d),
        "entropy": 1 - byte_entropy(p) / byte_entropy(d),
        "gzip9": 1 - gz(pruned) / gz(dense),
        "best": 1 - Path(f"{pruned}.gz").stat().st_size / Path(f"{dense}.gz").stat().st_size,
        "xz": 1 - len(lzma.compress(p, preset=9)) / len(lzma.compress(d, preset=9)),
    }


def encoders(work: Path, data: dict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole-file compressed-size drop at 50% unstructured sparsity, per encoder, on four MNIST CNNs."""
    from exporter import export
    from exporter.compress import compress

    out = [encoder_row("this benchmark's CNN", rows[0]["params"], rows[0]["tflite"], rows[1]["tflite"])]
    for index, (name, spec) in enumerate(STANDARD_CNNS.items()):
        model = build_standard(spec)
        model.fit(*data["train"], epochs=2, batch_size=64, verbose=0)
        dense = work / f"standard{index}.keras"
        model.save(dense)
        compress(
            dense, "0.5", output=work / f"standard{index}_p.keras", train=data["train"], epochs=2, default_skips=False
        )
        paths = []
        for tag, path in (("dense", dense), ("pruned", work / f"standard{index}_p.keras")):
            export(
                path, "android-arm64", calib=f"{work / 'calib.npz'}:x", output_dir=work / f"std{index}_{tag}",
                formats=("tflite",), gzip=True,
            )  # fmt: skip
            paths.append(work / f"std{index}_{tag}" / "model_int8.tflite")
        out.append(encoder_row(name, int(model.count_params()), *paths))
    return out


def xnnpack_sparse(work: Path) -> dict[str, Any]:
    """Float MobileNet-like model, 1x1 convs pruned to 80%: dense vs EXPERIMENTAL_SPARSITY vs int8, timed."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3), batch_size=1)
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    for filters in (32, 64, 64, 128, 128):
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 1, activation="relu", name=f"pw{filters}_{x.shape[-1]}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    zeroed = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1):
            kernel = layer.kernel.numpy()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
            layer.kernel.assign(kernel)
            zeroed += int((kernel == 0).sum())
    saved = work / "mobilenet_like"
    model.export(saved, format="tf_saved_model", verbose=False)

    def convert(sparse: bool, int8: bool = False) -> Path:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [rng.random((1, 96, 96, 3), dtype=np.float32)] for _ in range(20)
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = work / f"mnl_{'sparse' if sparse else 'dense'}{'_int8' if int8 else ''}.tflite"
        path.write_bytes(converter.convert())
        return path

    paths = [convert(False), convert(True), convert(False, int8=True)]
    from exporter.verify.graph import TFLiteGraph

    densify = [TFLiteGraph.from_file(p).op_counts().get("DENSIFY", 0) for p in paths]
    ms = interleaved_ms(paths, rounds=20, batch=50)
    return {
        "zeroed": zeroed,
        "models": [
            {"model": name, "bytes": p.stat().st_size, "densify_ops": d, "latency_ms": m}
            for name, p, d, m in zip(
                ("float dense", "float EXPERIMENTAL_SPARSITY", "int8 (zeros kept)"), paths, densify, ms, strict=True
            )
        ],
    }


def render(rows: list[dict[str, Any]], sparse: dict[str, Any], coders: list[dict[str, Any]], seconds: float) -> str:
    versions = {p: importlib.metadata.version(p) for p in ("tensorflow-cpu", "keras", "ai-edge-litert", "ethos-u-vela")}
    dense = rows[0]
    lines = [
        "# Pruning: what it buys, measured",
        "",
        f"_{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; run took {seconds:.0f} s. Written by `benchmarks/pruning.py`._",
        "",
        "Model: MNIST CNN (conv1 16, conv2 32 + BatchNorm, conv3 32, fc 64, classifier 10), trained 2 epochs on a "
        "seeded 60% split of the real MNIST test set; every pruned variant fine-tuned 2 epochs on the same split. "
        "Accuracy on the disjoint 30% split (3000 images); int8 accuracy through LiteRT on the host.",
        "Latency: int8 .tflite, LiteRT "
        f"{versions['ai-edge-litert']} with XNNPACK, 1 thread, all four models interleaved in one process "
        "(40 rounds x 200 invokes, median). Host timings are not device timings.",
        "Vela: cortex-m55-ethos-u55 profile (ethos-u55-128, Ethos_U55_High_End_Embedded, Shared_Sram); Vela's own "
        "estimates, not device measurements. gzip -9: what the `gzip -9` tool makes of the .tflite; .tflite.gz: the "
        "file `edgeport export --gzip` writes (standard gzip, zlib's filtered strategy when smaller; "
        "exporter/analyze/compressed.py).",
        "",
        "| variant | params | float acc | int8 acc | int8 zeros | zeros kept | .tflite | gzip -9 | .tflite.gz | "
        "Vela flash | Vela SRAM | Vela est. ms | host latency | vs dense |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kept = f"{r['zeros_survived']:.2%}" if r["zeros_survived"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {r['params']:,} | {r['float_accuracy']:.2%} | {r['int8_accuracy']:.2%} | "
            f"{r['int8_zeros']:.0%} | {kept} | {r['bytes']:,} B | {r['gzip_bytes']:,} B "
            f"({r['gzip_bytes'] / dense['gzip_bytes'] - 1:+.1%}) | {r['best_gzip_bytes']:,} B "
            f"({r['best_gzip_bytes'] / dense['best_gzip_bytes'] - 1:+.1%}) | {r['vela_flash'] or 0:,} B | {r['vela_sram'] or 0:,} B | "
            f"{r['vela_ms'] or 0:.4f} | {r['latency_ms'] * 1000:.1f} us | {r['latency_ms'] / dense['latency_ms']:.2f}x |"
        )
    lines += [
        "",
        "## Accuracy after each step (float, Keras)",
        "",
        "The pruned variants were fine-tuned 2 more epochs than the dense model had, which is why some end above it.",
        "",
    ]
    for r in rows[1:]:
        steps = "; ".join(f"{s['step']} {s['accuracy']:.2%}" for s in r["steps"] or [])
        lines.append(f"- {r['variant']}: {steps}")
    lines += [
        "",
        "## Compressed size depends on the encoder: four MNIST CNNs at 50% unstructured sparsity",
        "",
        "Each model trained 2 epochs on the same split, pruned 50% in every Conv/Dense kernel (--prune-all) and "
        "fine-tuned 2 epochs, exported for android-arm64 with --gzip. Drop of the whole int8 .tflite, pruned vs "
        "dense. Entropy bound: 1 - H(pruned bytes) / H(dense bytes), order-0 byte entropy, the best any "
        "byte-by-byte coder can do. xz -9 for reference (not a format edgeport writes).",
        "",
        "| model | params | .tflite | entropy bound | gzip -9 | .tflite.gz (edgeport) | xz -9 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in coders:
        lines.append(
            f"| {c['model']} | {c['params']:,} | {c['bytes']:,} B | -{c['entropy']:.1%} | -{c['gzip9']:.1%} | "
            f"-{c['best']:.1%} | -{c['xz']:.1%} |"
        )
    lines += ["", "## Does LiteRT's XNNPACK run sparse weights faster?", ""]
    lines.append(
        f"MobileNet-like float model, 96x96x3 input, {sparse['zeroed']:,} weights of its 1x1 convs zeroed (80%). "
        "Same interleaved timing (20 rounds x 50 invokes)."
    )
    lines += ["", "| model | .tflite | DENSIFY ops | host latency |", "|---|---:|---:|---:|"]
    base = sparse["models"][0]["latency_ms"]
    for m in sparse["models"]:
        lines.append(
            f"| {m['model']} | {m['bytes']:,} B | {m['densify_ops']} | {m['latency_ms'] * 1000:.0f} us "
            f"({m['latency_ms'] / base:.2f}x) |"
        )
    lines += ["", "## Reading", ""]
    lines += reading(rows, sparse, coders)
    return "\n".join(lines) + "\n"


def reading(rows: list[dict[str, Any]], sparse: dict[str, Any], coders: list[dict[str, Any]]) -> list[str]:
    dense, unstructured, two_four, channels = rows
    out = [
        f"- Unstructured 50% and 2:4 leave the .tflite exactly as large ({unstructured['bytes']:,} B vs "
        f"{dense['bytes']:,} B) and no faster on the host ({unstructured['latency_ms'] / dense['latency_ms']:.2f}x, "
        f"{two_four['latency_ms'] / dense['latency_ms']:.2f}x): LiteRT's int8 kernels are dense. What they buy is "
        f"compressed size (the shipped .tflite.gz {unstructured['best_gzip_bytes'] / dense['best_gzip_bytes'] - 1:+.1%} "
        f"and {two_four['best_gzip_bytes'] / dense['best_gzip_bytes'] - 1:+.1%}; `gzip -9` "
        f"{unstructured['gzip_bytes'] / dense['gzip_bytes'] - 1:+.1%} and "
        f"{two_four['gzip_bytes'] / dense['gzip_bytes'] - 1:+.1%}) and Ethos-U flash, because Vela's weight encoder "
        f"compresses zeros ({unstructured['vela_flash'] or 0:,} B vs {dense['vela_flash'] or 0:,} B).",
        f"- How much smaller compressed depends on the encoder as much as on the zeros: at 50% sparsity the `gzip -9` "
        f"tool gives {min(c['gzip9'] for c in coders):.1%} to {max(c['gzip9'] for c in coders):.1%} on the four CNNs, "
        f"the .tflite.gz `edgeport export --gzip` writes (a standard gzip file) {min(c['best'] for c in coders):.1%} to "
        f"{max(c['best'] for c in coders):.1%}, against an entropy bound of {min(c['entropy'] for c in coders):.1%} to "
        f"{max(c['entropy'] for c in coders):.1%}. gzip -9 codes every run of 3+ zero bytes as a back-reference, which "
        "on scattered zeros costs more than three 1-bit literals; the filtered stream keeps only 6+ byte matches.",
        f"- Channel pruning removes half the filters of conv2 and conv3: {channels['params']:,} parameters instead of "
        f"{dense['params']:,}, a {1 - channels['bytes'] / dense['bytes']:.0%} smaller .tflite, and "
        f"{channels['latency_ms'] / dense['latency_ms']:.2f}x the dense host latency "
        f"({channels['latency_ms'] * 1000:.1f} vs {dense['latency_ms'] * 1000:.1f} us).",
    ]
    f_dense, f_sparse, q = sparse["models"]
    out.append(
        f"- XNNPACK sparse inference: the EXPERIMENTAL_SPARSITY float model ({f_sparse['densify_ops']} DENSIFY ops) ran "
        f"at {f_sparse['latency_ms'] / f_dense['latency_ms']:.2f}x the dense float model. The LiteRT XNNPACK delegate "
        "switches to sparse (NCHW) kernels only for float models whose weights are stored sparse (DENSIFY), in a "
        "subgraph that starts with a 3x3 stride-2 conv on 3 channels, ends in a spatial mean, and has at least 2/3 "
        "zeros in its 1x1 convs, and only where the XNNPACK build has sparse (CHW) kernels for the CPU. There is "
        "no sparse int8 path: the int8 model with the same zeros ran at "
        f"{q['latency_ms'] / f_dense['latency_ms']:.2f}x the dense float model, as fast as any dense int8 model."
    )
    return out


def main(argv: list[str] | None = None) -> int:
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from exporter.atomic import write_text
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeport-prune-bench-") as tmp:
        work = Path(tmp)
        data = mnist_splits()
        rows = run_variants(work, data)
        sparse = xnnpack_sparse(work)
        coders = encoders(work, data, rows)
        text = render(rows, sparse, coders, time.perf_counter() - started)
    write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
