"""Train the demo model: a small CNN on scikit-learn's 8x8 handwritten digits (the data ships in the wheel).

Writes ``digits_cnn.keras`` and ``digits_calib.npz`` (``x``: held-out images scaled to 0..1, shape
(N, 8, 8, 1); ``y``: their labels) into ``--out-dir``. Seeded, so every run trains the same model.
Takes a few seconds on 2 cores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def digits_split():
    """scikit-learn's digits scaled to 0..1, shuffled (seed 0): 80% to train on, 20% held out (the demo's data)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path("examples/demo"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_held, y_held) = digits_split()

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="digit"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_held, y_held, verbose=0)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.out_dir / "digits_cnn.keras"
    tmp_model = model_path.with_name(".digits_cnn.tmp.keras")
    model.save(tmp_model)
    tmp_model.replace(model_path)
    calib_path = args.out_dir / "digits_calib.npz"
    tmp_calib = calib_path.with_name(".digits_calib.tmp.npz")
    np.savez(tmp_calib, x=x_held, y=y_held)
    tmp_calib.replace(calib_path)
    print(
        f"trained {model_path} ({model.count_params()} params), held-out accuracy {accuracy:.3f}; calibration data {calib_path}"
    )


if __name__ == "__main__":
    main()
