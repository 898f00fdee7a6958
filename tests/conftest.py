"""Shared fixtures: the real assets in ../shared/assets and tiny models trained in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import quiet_keras

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real models and data of ../shared/assets; tests that need them skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"real assets not found at {SHARED} (a fresh clone has no ../shared; CI has it)")
    return SHARED


@pytest.fixture(scope="session")
def mnist(assets):
    """The real MNIST test set: (images uint8 (10000, 28, 28), labels)."""
    from exporter.calibrate import load_mnist_idx

    folder = assets / "datasets" / "mnist_test"
    return load_mnist_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def mnist_splits(mnist):
    """Disjoint seeded train/calib/eval splits of the real MNIST test set, images scaled to 0..1."""
    from mnist_models import split_mnist

    return split_mnist(*mnist)


@pytest.fixture(scope="session")
def mnist_cnn_path(tmp_path_factory, mnist_splits):
    """A small CNN trained for 2 epochs on the MNIST train split (~10 s), saved as .keras."""
    keras = quiet_keras()
    keras.utils.set_random_seed(0)
    x, y = mnist_splits["train"]
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="mnist_cnn",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("models") / "mnist_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_keras_path(tmp_path_factory):
    """An untrained 16x16x1 CNN (instant): for plumbing and error tests where accuracy is irrelevant."""
    keras = quiet_keras()
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1), name="image"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="classifier"),
        ],
        name="tiny",
    )
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_calib_path(tmp_path_factory):
    import numpy as np

    path = tmp_path_factory.mktemp("tinycal") / "calib.npy"
    np.save(path, np.random.default_rng(0).random((60, 16, 16, 1), dtype=np.float32))
    return path
