"""How far the int8 model's outputs are from the float model's on the same inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputFidelity:
    """Agreement of one output tensor, float vs int8, over ``samples`` inputs."""

    name: str
    samples: int
    top1_agreement: float | None  # fraction; None for non-classification outputs
    mean_abs_error: float
    max_abs_error: float
    snr_db: float  # 10*log10(signal power / error power); inf when identical
    float_accuracy: float | None = None  # fraction of labelled samples the float model gets right
    int8_accuracy: float | None = None
    #: Fraction of output values within one int8 step of the reference quantized with the output's scale:
    #: the agreement a quantization-aware model (whose Keras outputs are on the int8 grid) must show.
    within_one_lsb: float | None = None

    @property
    def accuracy_drop_pp(self) -> float | None:
        """Float minus int8 accuracy in percentage points (positive: int8 is worse)."""
        if self.float_accuracy is None or self.int8_accuracy is None:
            return None
        return 100.0 * (self.float_accuracy - self.int8_accuracy)


@dataclass(frozen=True)
class Fidelity:
    """Float vs int8 on the same inputs; ``inputs_from`` says which samples were used."""

    inputs_from: str
    outputs: list[OutputFidelity]

    # A model is as faithful as its worst output: a detector whose boxes drift but whose classes agree
    # is not fine. The summary figures (and the accuracy guard) therefore take the worst over outputs.

    @property
    def top1_agreement(self) -> float | None:
        values = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(values) if values else None

    @property
    def snr_db(self) -> float | None:
        return min((o.snr_db for o in self.outputs), default=None)

    @property
    def accuracy_drop_pp(self) -> float | None:
        """The drop of the labelled output (labels score one output: see :func:`labelled_output`)."""
        return next((o.accuracy_drop_pp for o in self.outputs if o.accuracy_drop_pp is not None), None)

    def to_dict(self) -> dict:
        outputs = [dict(_clean(asdict(o)), accuracy_drop_pp=o.accuracy_drop_pp) for o in self.outputs]
        return {"inputs_from": self.inputs_from, "outputs": outputs}


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


def snr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    signal = float(np.mean(np.square(reference.astype(np.float64))))
    noise = float(np.mean(np.square(reference.astype(np.float64) - actual.astype(np.float64))))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _is_classification(reference: np.ndarray, input_sizes: Sequence[int] = ()) -> bool:
    """A (N, classes) output with more than one class: top-1 agreement is meaningful.

    An output as large as one of the model's inputs is a reconstruction (an autoencoder's 640 values),
    not class scores: the index of its largest value means nothing.
    """
    return reference.ndim == 2 and reference.shape[1] > 1 and reference.shape[1] not in set(input_sizes)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, classes) scores; a single sigmoid unit counts > 0.5 as class 1."""
    scores = outputs.reshape(outputs.shape[0], -1)
    predicted = (scores[:, 0] > 0.5).astype(np.int64) if scores.shape[1] == 1 else np.argmax(scores, 1)
    return float(np.mean(predicted == np.asarray(labels).reshape(-1).astype(np.int64)))


def labelled_output(reference: Sequence[np.ndarray], labels: np.ndarray, input_sizes: Sequence[int] = ()) -> int | None:
    """Which output the labels score: the first classification output whose classes hold every label.

    A multi-output model (say a box regressor beside a classifier, in Keras' sorted key order) has
    its class scores anywhere; a single-output model is scored on its only output, as before.
    """
    if len(reference) == 1:
        return 0
    flat = np.asarray(labels).reshape(len(labels), -1)
    top = int(flat.max()) if flat.size and flat.shape[1] == 1 else None
    for position, ref in enumerate(reference):
        ref = ref.reshape(ref.shape[0], -1)
        if not _is_classification(ref, input_sizes) or ref.shape[0] != len(labels):
            continue
        if (top is not None and top < ref.shape[1]) or flat.shape[1] == ref.shape[1]:
            return position
    return None


def compare(
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    names: Sequence[str],
    inputs_from: str,
    labels: np.ndarray | None = None,
    input_sizes: Sequence[int] = (),
    output_quant: Sequence[tuple[float, int] | None] = (),
) -> Fidelity:
    """Float vs int8 per output; with ``labels``, also each model's accuracy on the labelled output, and with
    ``output_quant`` (scale, zero point per int8 output) the fraction of values within one step."""
    outputs = []
    scored = labelled_output(reference, labels, input_sizes) if labels is not None else None
    for position, (ref, act, name) in enumerate(zip(reference, actual, names, strict=True)):
        ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 2 else ref
        act = act.reshape(ref.shape)
        err = np.abs(ref.astype(np.float64) - act.astype(np.float64))
        agreement = (
            float(np.mean(np.argmax(ref, 1) == np.argmax(act, 1))) if _is_classification(ref, input_sizes) else None
        )
        labelled = labels is not None and position == scored and len(labels) == ref.shape[0]
        outputs.append(
            OutputFidelity(
                name=name,
                samples=int(ref.shape[0]),
                top1_agreement=agreement,
                mean_abs_error=float(err.mean()),
                max_abs_error=float(err.max()),
                snr_db=snr_db(ref, act),
                float_accuracy=accuracy(ref, labels) if labelled else None,
                int8_accuracy=accuracy(act, labels) if labelled else None,
                within_one_lsb=within_one_lsb(
                    ref, act, output_quant[position] if position < len(output_quant) else None
                ),
            )
        )
    return Fidelity(inputs_from=inputs_from, outputs=outputs)


def within_one_lsb(reference: np.ndarray, actual: np.ndarray, quant: tuple[float, int] | None) -> float | None:
    """Share of values where the int8 output is at most one step from the reference's nearest int8 value."""
    if quant is None or not quant[0]:
        return None
    scale, zero = quant
    expected = np.round(reference.astype(np.float64) / scale) + zero  # unclipped: saturation counts as a miss
    got = np.round(actual.astype(np.float64) / scale) + zero
    return float(np.mean(np.abs(got - expected) <= 1))
