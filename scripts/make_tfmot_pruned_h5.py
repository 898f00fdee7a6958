"""Write tests/data/tfmot_pruned_cnn.h5: a Keras 2 model still wrapped in tfmot's ``prune_low_magnitude``.

Users bring such files (pruned with the TensorFlow Model Optimization Toolkit, saved without
``strip_pruning``); edgeport must load, strip and export them. tfmot and tf-keras cannot share a venv
with Keras 3 (see ../shared/STACK.md), so this script makes its own throwaway venv under /tmp and
re-runs itself there:

    .venv/bin/python scripts/make_tfmot_pruned_h5.py [tests/data/tfmot_pruned_cnn.h5]

Beside the .h5 it writes ``<name>_probe.npz`` (8 MNIST images and the wrapped model's outputs), so a
test can check the stripped model computes the same function.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

VENV = Path("/tmp/edgeport-tfmot-venv")
ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets")) / "datasets" / "mnist_test"


def outer(out: Path) -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import tensorflow_model_optimization, tf_keras"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "tensorflow-model-optimization", "tf-keras"], check=True
        )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    subprocess.run([str(python), __file__, "--inner", str(out.resolve())], check=True, env=env)


def _idx(path: Path):
    import numpy as np

    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def inner(out: Path) -> None:
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x = (_idx(MNIST / "t10k-images-idx3-ubyte.gz").astype("float32") / 255.0)[..., None]
    y = _idx(MNIST / "t10k-labels-idx1-ubyte.gz").astype("int64")
    tf_keras.utils.set_random_seed(0)
    base = tf_keras.Sequential(
        [
            tf_keras.layers.InputLayer(input_shape=(28, 28, 1)),
            tf_keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            tf_keras.layers.MaxPooling2D(2, name="pool1"),
            tf_keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            tf_keras.layers.MaxPooling2D(2, name="pool2"),
            tf_keras.layers.Flatten(name="flatten"),
            tf_keras.layers.Dense(10, activation="softmax", name="classifier"),
        ]
    )
    base.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    base.fit(x[:6000], y[:6000], epochs=1, batch_size=64, verbose=0)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=20)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(
        x[:6000], y[:6000], epochs=1, batch_size=64, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pruned.save(str(out), include_optimizer=False, save_format="h5")
    probe = x[9000:9008]
    np.savez(out.with_name(out.stem + "_probe.npz"), x=probe, y=pruned.predict(probe, verbose=0))
    accuracy = float(np.mean(pruned.predict(x[9000:], verbose=0).argmax(1) == y[9000:]))
    print(f"wrote {out} ({out.stat().st_size:,} B); accuracy on 1000 held-out MNIST images {accuracy:.2%}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--inner":
        inner(Path(sys.argv[2]))
    else:
        outer(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "tests" / "data" / "tfmot_pruned_cnn.h5"))
