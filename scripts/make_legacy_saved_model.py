"""Write tests/data/legacy_saved_model (+ _probe_output.npy beside it): a real SavedModel TF 2.21 refuses to load.

Keras 2 (tf_keras) SavedModels saved with a legacy optimizer carry the optimizer's slot variables;
``tf.saved_model.load`` then fails with ``'_UserObject' object has no attribute 'add_slot'`` (the same
failure as TF 2.3-era SavedModels users still have), while the compat.v1 converter reads them.

tf_keras must not go into the project venv (it pins a full tensorflow), so install it aside:

    .venv/bin/pip download tf_keras==2.21.0 --no-deps -d /tmp/tfk_dl
    .venv/bin/pip install --no-deps --target /tmp/tfk /tmp/tfk_dl/tf_keras-2.21.0-py3-none-any.whl
    PYTHONPATH=/tmp/tfk .venv/bin/python scripts/make_legacy_saved_model.py tests/data/legacy_saved_model
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def main(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tf_keras
    except ImportError:
        sys.exit("tf_keras is not importable: see this script's docstring for the throwaway install.")
    import numpy as np

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.InputLayer(input_shape=(8,)),
            tf_keras.layers.Dense(4, activation="relu"),
            tf_keras.layers.Dense(2, activation="softmax"),
        ]
    )
    # The legacy optimizer is what leaves slot variables in the SavedModel object graph.
    model.compile(optimizer=tf_keras.optimizers.legacy.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 8), dtype=np.float32), rng.integers(0, 2, 16), epochs=1, verbose=0)
    if out.exists():
        shutil.rmtree(out)
    model.save(str(out), save_format="tf", include_optimizer=True)
    # Reference predictions, so tests can check the compat.v1 conversion computes the same function.
    probe = np.linspace(0.0, 1.0, 8, dtype=np.float32).reshape(1, 8)
    np.save(out.with_name(out.name + "_probe_output.npy"), model.predict(probe, verbose=0).astype(np.float32))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/legacy_saved_model"))
