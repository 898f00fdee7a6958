"""The compression toolbox side by side on real MNIST: params, int8 size, gzip, accuracy, host latency.

    .venv/bin/python benchmarks/compression.py [--output benchmarks/compression_results.md]

One small CNN (Dense-heavy, like many microcontroller models) is trained on the MNIST train split
(6000 images of the shipped test set, seeded), then compressed five ways with edgeport's API; every
variant is exported full-int8 for cortex-m4 with ``exporter.export`` (200 calibration images) and
measured the same way: accuracy of the int8 model on the 3000-image eval split (LiteRT), raw and
gzip -9 size of model_int8.tflite, and LiteRT latency (1 thread, median of 500 single-image runs
after 50 warm-up runs). Host timings compare models; they do not predict a device's latency.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: scripts/mnist_models.py: the data splits and CNNs the tests train, so results and tests share them.
sys.path.insert(0, str(ROOT / "scripts"))
ASSETS = ROOT.parent / "shared" / "assets"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "compression_results.md")
    args = parser.parse_args()
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    from mnist_models import load_mnist_splits, two_conv_cnn

    from exporter import export
    from exporter.analyze.compressed import gzip9_size
    from exporter.analyze.inference import _interpreter, run_tflite
    from exporter.atomic import write_text
    from exporter.compress import (
        DistillSpec,
        LowRankSpec,
        PruneSpec,
        cluster_model,
        distill,
        factorize,
        prune_model,
        scale_width,
    )  # fmt: skip
    from exporter.compress.finetune import fine_tune

    splits = load_mnist_splits(ASSETS)
    train, calib, evaluation = (splits[k] for k in ("train", "calib", "eval"))

    keras.utils.set_random_seed(0)
    base = two_conv_cnn(16, 32, 128)
    base.fit(*train, epochs=4, batch_size=64, verbose=0)

    variants = {"baseline (int8 only)": base}
    variants["prune 50% + 1 epoch"], _ = prune_model(
        base, PruneSpec.parse("50%", train="arrays", epochs=1), train=train
    )
    variants["distill to width 0.5 (5 epochs)"], _ = distill(
        scale_width(base, 0.5), base, train, spec=DistillSpec(epochs=5), compare_alone=False
    )
    lowrank, _ = factorize(base, LowRankSpec(energy=0.9), calib=calib[0][:500])
    fine_tune(lowrank, *train, epochs=1, batch_size=64, learning_rate=2e-4)
    variants["low-rank energy 0.9 + 1 epoch"] = lowrank
    variants["cluster 16 + 1 epoch"], _ = cluster_model(base, 16, train=train, epochs=1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "calib.npy", calib[0][:200])
        for name, model in variants.items():
            path = Path(tmp) / f"{len(rows)}.keras"
            model.save(path)
            out = Path(tmp) / f"out{len(rows)}"
            export(path, "cortex-m4", str(Path(tmp) / "calib.npy"), output_dir=out)
            blob = (out / "model_int8.tflite").read_bytes()
            predicted = run_tflite(blob, [evaluation[0]])[0].argmax(axis=-1)
            acc = float(np.mean(predicted == evaluation[1]))
            interp = _interpreter(blob, 1)
            detail = interp.get_input_details()[0]
            interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            for _ in range(50):
                interp.invoke()
            times = []
            for _ in range(500):
                start = time.perf_counter()
                interp.invoke()
                times.append(time.perf_counter() - start)
            rows.append(
                (
                    name,
                    model.count_params(),
                    len(blob),
                    gzip9_size(blob),
                    acc,
                    statistics.median(times) * 1e6,
                )
            )
            print(rows[-1], file=sys.stderr)

    import ai_edge_litert
    import tensorflow as tf

    lines = [
        "# Compression toolbox on MNIST (benchmarks/compression.py)",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, LiteRT {getattr(ai_edge_litert, '__version__', '?')}. "
        f"Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "Model: CNN conv16-conv32-dense128 trained 4 epochs on 6000 MNIST images (seed 0). Every variant exported",
        "full-int8 for cortex-m4 with `exporter.export` (200 calibration images). Accuracy: int8 model, LiteRT, top-1 on",
        "the 3000-image eval split (measured, host). Latency: LiteRT 1 thread, median of 500 single-image invokes (host x86-64).",
        "",
        "| technique | params | int8 .tflite | gzip -9 | int8 accuracy | host latency |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, params, size, gz, acc, us in rows:
        lines.append(f"| {name} | {params:,} | {size:,} B | {gz:,} B | {acc:.2%} | {us:.1f} us |")
    lines += [
        "",
        "Reading (this run): pruning and clustering barely change the raw int8 file (TFLite stores every weight)",
        "and pay off under gzip or a compressed flash format; distillation to a narrower student is the one that",
        "shrinks the raw file and the latency; low-rank at energy 0.9 saves little on this conv-heavy-compute model",
        "and two thinner layers can be slower on the host than one. Check your own model's row before choosing.",
        "",
    ]
    write_text(args.output, "\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
