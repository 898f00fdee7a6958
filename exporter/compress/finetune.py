"""Fine-tuning with masks held: the pruned weights stay exact zeros through every optimizer step.

The optimizer (Adam's momentum in particular) would regrow pruned weights; re-applying the masks
after each batch is what tfmot's wrappers do too, without a wrapper layer to strip later. The
progress bar is Keras' own (``verbose=1``), sent to stderr so a CLI's stdout stays the result.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .prune import Target, apply_masks

log = logging.getLogger(__name__)


def _callback_class():
    import keras

    class MaskHolder(keras.callbacks.Callback):
        """Re-applies masks after every batch; ``update(step)`` may return new masks (a schedule)."""

        def __init__(self, targets: list[Target], masks: dict, update: Callable[[int], dict | None] | None) -> None:
            super().__init__()
            self.targets, self.masks, self.update, self.step = targets, masks, update, 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.step += 1
            if self.update is not None:
                new = self.update(self.step)
                if new is not None:
                    self.masks = new
            apply_masks(self.targets, self.masks)

    return MaskHolder


def outputs_probabilities(model: Any, x: np.ndarray) -> bool:
    """Does the model end in a softmax (rows in [0, 1] summing to 1)? Decides the loss's ``from_logits``."""
    sample = _predict(model, x[:32])
    return bool(sample.min() >= 0.0 and sample.max() <= 1.0 and np.allclose(sample.sum(axis=-1), 1.0, atol=1e-3))


def class_labels(y: np.ndarray) -> np.ndarray:
    """Integer labels from integer or one-hot labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1).astype(np.int64)
    return y.reshape(-1).astype(np.int64)


def _predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Eager batched inference: ``predict()`` retraces (and warns) each time a model is rebuilt or recompiled."""
    return np.concatenate([np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)])


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the Keras (float) model on labelled samples."""
    predicted = _predict(model, x).argmax(axis=-1)
    return float(np.mean(predicted == class_labels(y)))


def fine_tune(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    targets: list[Target] | None = None,
    masks: dict | None = None,
    update: Callable[[int], dict | None] | None = None,
    verbose: bool = False,
    seed: int = 0,
    callbacks: list[Any] | None = None,
) -> float:
    """Train ``model`` in place (masks held when given; ``callbacks`` run too); returns the last epoch's loss."""
    import keras

    keras.utils.set_random_seed(seed)
    from_logits = not outputs_probabilities(model, x)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    callbacks = list(callbacks or [])
    if targets:
        holder = _callback_class()(targets, masks or {}, update)
        callbacks.append(holder)
        apply_masks(targets, holder.masks)
    stream = _progress_bars() if verbose else contextlib.nullcontext()
    with stream:
        history = model.fit(
            x, class_labels(y), epochs=epochs, batch_size=batch_size, shuffle=True, verbose=1 if verbose else 0,
            callbacks=callbacks,
        )  # fmt: skip
    if targets:
        apply_masks(targets, holder.masks)
    losses = history.history.get("loss") or [float("nan")]
    return float(losses[-1])


@contextlib.contextmanager
def _progress_bars():
    """Keras' own progress bars on stderr (edgeport turns Keras' interactive logging off at import)."""
    import keras

    was = keras.config.is_interactive_logging_enabled()
    keras.config.enable_interactive_logging()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if not was:
            keras.config.disable_interactive_logging()


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, -(-samples // batch_size))
