"""The MNIST CNN that tests/test_prune.py checks and benchmarks/pruning.py measures, defined once.

A number in benchmarks/pruning_results.md and the test that guards it must be about the same model;
both import this module (pytest puts scripts/ on the path; the benchmark adds it).
"""

from __future__ import annotations

from typing import Any


def wide_cnn() -> Any:
    """conv1 16, conv2 32 + BatchNorm, conv3 32, fc 64, classifier 10 (47,658 weights), compiled, untrained.

    Two middle convs and a hidden Dense, so the weights (not the flatbuffer) dominate the file, as in
    real models, and channel pruning has middle layers to cut.
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(32, 3, name="conv2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.ReLU(name="relu2"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv3"),
            keras.layers.MaxPooling2D(2, name="pool3"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="wide_cnn",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
