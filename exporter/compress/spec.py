"""What to prune and how, as validated data (no TensorFlow import: the CLI parses it before loading Keras).

One ``--prune`` value names the method, because each method has exactly one knob users think in:
``0.5`` / ``50%`` is the fraction of weights zeroed (unstructured magnitude pruning), ``2:4`` is an
N:M pattern (the fraction is fixed by it), ``channels:0.5`` the fraction of filters removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UsageError

METHODS = ("magnitude", "n:m", "channels")
SCOPES = ("layer", "global")
_FORMS = "0.5 or 50% (unstructured), 2:4 (N:M along input channels) or channels:0.5 (remove filters)"


@dataclass(frozen=True)
class PruneSpec:
    """A pruning request; see :meth:`parse` for the ``--prune`` text it comes from."""

    method: str = "magnitude"
    sparsity: float = 0.5
    n: int = 2
    m: int = 4
    scope: str = "layer"
    #: Layers never pruned, on top of the default skips.
    skip: tuple[str, ...] = ()
    #: Skip the first conv and the classifier (the layers pruning hurts most for the least size).
    default_skips: bool = True
    train: str | None = None
    epochs: int = 2
    rounds: int = 1
    train_samples: int = 60000
    batch_size: int = 64
    learning_rate: float = 5e-4
    seed: int = 0
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"Pruning method must be one of {', '.join(METHODS)}; received {self.method!r}.")
        if self.scope not in SCOPES:
            raise UsageError(f"--prune-scope must be 'layer' or 'global'; received {self.scope!r}.")
        if not 0.0 < self.sparsity < 1.0:
            raise UsageError(
                f"--prune needs a fraction between 0 and 1 (exclusive); received {self.sparsity:g}.",
                hint=f"Pass {_FORMS}.",
            )
        if self.method == "n:m" and not 0 < self.n < self.m:
            raise UsageError(f"An N:M pattern needs 0 < N < M; received {self.n}:{self.m}.", hint="Pass 2:4.")
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1; received {self.epochs}.")
        if self.rounds < 1:
            raise UsageError(f"--rounds must be at least 1; received {self.rounds}.")
        if self.train_samples < 1:
            raise UsageError(f"--train-samples must be at least 1; received {self.train_samples}.")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1; received {self.batch_size}.")
        if self.rounds > 1 and self.train is None:
            raise UsageError(
                f"--rounds {self.rounds} alternates pruning and retraining, which needs training data.",
                hint="Pass --train DATA (e.g. data.npz:x,y or an image folder with class sub-folders), or drop --rounds.",
            )

    @classmethod
    def parse(cls, text: str, **fields) -> PruneSpec:
        """``0.5``, ``50%``, ``2:4``, ``channels:0.5`` (or ``channels:50%``) -> a spec; other fields as given."""
        raw = str(text).strip().lower()
        if raw.startswith("channels:") or raw.startswith("filters:"):
            return cls(method="channels", sparsity=_fraction(raw.split(":", 1)[1], text), **fields)
        match = re.fullmatch(r"(\d+):(\d+)", raw)
        if match:
            n, m = int(match.group(1)), int(match.group(2))
            if not 0 < n < m:
                raise UsageError(f"An N:M pattern needs 0 < N < M; received {text!r}.", hint="Pass 2:4.")
            return cls(method="n:m", n=n, m=m, sparsity=1.0 - n / m, **fields)
        return cls(method="magnitude", sparsity=_fraction(raw, text), **fields)

    def describe(self) -> str:
        if self.method == "channels":
            what = f"channel pruning: {self.sparsity:.0%} of the filters removed (L1 norm)"
        elif self.method == "n:m":
            what = f"{self.n}:{self.m} structured sparsity along input channels ({self.sparsity:.0%} zeros)"
        else:
            what = f"unstructured magnitude pruning to {self.sparsity:.0%} zeros ({self.scope} threshold)"
        if self.train is None:
            return what + ", one-shot (no fine-tuning)"
        rounds = f" in {self.rounds} prune->retrain rounds" if self.rounds > 1 else ""
        schedule = "" if self.method != "magnitude" else ", polynomial schedule"
        return what + f", fine-tuned {self.epochs} epoch{'s' if self.epochs != 1 else ''}{rounds}{schedule}"

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "sparsity": self.sparsity,
            "pattern": f"{self.n}:{self.m}" if self.method == "n:m" else None,
            "scope": self.scope if self.method == "magnitude" else None,
            "skip": list(self.skip),
            "default_skips": self.default_skips,
            "train": self.train,
            "epochs": self.epochs if self.train else 0,
            "rounds": self.rounds,
            "description": self.describe(),
        }


def _fraction(value: str, text: str) -> float:
    value = value.strip()
    percent = value.endswith("%")
    try:
        number = float(value.rstrip("%"))
    except ValueError as exc:
        raise UsageError(f"--prune takes {_FORMS}; received {text!r}.") from exc
    if percent:
        number /= 100.0
    if not 0.0 < number < 1.0:
        if not percent and 1.0 < number < 100.0:
            raise UsageError(
                f"--prune needs a fraction between 0 and 1 (exclusive); received {text!r}.",
                hint=f"Did you mean {number:g}%? Pass 0.5 or 50% for half the weights.",
            )
        raise UsageError(
            f"--prune needs a fraction between 0 and 1 (exclusive); received {text!r}.", hint=f"Pass {_FORMS}."
        )
    return number
