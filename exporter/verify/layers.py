"""Map TFLite tensor names back to the Keras layers they came from.

A finding that says "op 7 (NEG) is float" helps nobody; "layer 'ln' (LayerNormalization) leaves float ops"
tells the user what to change. The converter keeps the TensorFlow name scope in every tensor name:

* Keras 3 (``model.export`` or ``from_keras_model``): ``functional_1/conv_a_1/convolution``,
  ``sequential_1/dense_1_2/MatMul;sequential_1/dense_1_2/Relu``. Every scope carries a uniquifying ``_<n>``
  suffix: layer ``dense`` appears as ``dense_1``, layer ``dense_1`` as ``dense_1_2``.
* Keras 2 / tf.keras files: ``model/conv2d/BiasAdd``, no suffix.
* Fused ops join several names with ``;`` (``model/activation/Relu;model/batch_normalization/...;model/conv2d/Conv2D``).

Because ``dense_1`` means layer ``dense`` in one convention and layer ``dense_1`` in the other,
:func:`keras3_scoped` decides the convention once per graph from the names that only one reading explains.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable

_SCOPE_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")


def _strip_suffix(segment: str) -> str | None:
    match = _SCOPE_SUFFIX.match(segment)
    return match.group("base") if match else None


def _readings(segment: str, keras3_scopes: bool | None) -> list[str]:
    """The layer names one path segment may stand for, exact reading first."""
    readings = [] if keras3_scopes is True else [segment]
    base = _strip_suffix(segment) if keras3_scopes is not False else None
    return [*readings, base] if base is not None else readings


def _layer_at(segments: list[str], end: int, layer_names: Collection[str], keras3_scopes: bool | None) -> str | None:
    """The layer named by the segments ending at ``end``: a nested key (``outer/inner``, as layer maps
    write duplicate names) over several segments first, else a single segment."""
    depth = min(max((name.count("/") + 1 for name in layer_names), default=1), end + 1)
    for span in range(depth, 0, -1):
        candidates = [""]
        for segment in segments[end - span + 1 : end + 1]:
            candidates = [f"{c}/{r}" if c else r for c in candidates for r in _readings(segment, keras3_scopes)]
        for candidate in candidates:
            if candidate in layer_names:
                return candidate
    return None


def layer_for_tensor(
    tensor_name: str, layer_names: Collection[str], *, keras3_scopes: bool | None = None
) -> str | None:
    """The Keras layer a TFLite tensor name belongs to, or None when no path segment names a layer.

    Each ``;``-separated part votes for the deepest ``/`` segment that names a layer (nested models put
    the most specific layer last; a nested key ``outer/inner`` matches two consecutive segments). The
    layer with most votes wins; a tie goes to the later part, which for fused ops is the op's own layer
    (``re_lu/Relu;conv2d/convolution`` -> ``conv2d``). ``keras3_scopes``: True when scopes carry Keras 3's
    ``_<n>`` suffix, False when they do not, None to accept both (an exact name match is preferred); see
    :func:`keras3_scoped`.
    """
    if not tensor_name or not layer_names:
        return None
    votes: Counter[str] = Counter()
    last_seen: dict[str, int] = {}
    for position, part in enumerate(tensor_name.split(";")):
        segments = part.split("/")
        scopes = segments[:-1] or segments  # the last segment names the TF op (MatMul, Relu, ...)
        for end in range(len(scopes) - 1, -1, -1):
            layer = _layer_at(scopes, end, layer_names, keras3_scopes)
            if layer is not None:
                votes[layer] += 1
                last_seen[layer] = position
                break
    if not votes:
        return None
    return max(votes, key=lambda layer: (votes[layer], last_seen[layer], len(layer)))


def keras3_scoped(tensor_names: Iterable[str], layer_names: Collection[str]) -> bool | None:
    """Whether a graph's names follow Keras 3's suffixed scopes (True), Keras 2's bare ones (False),
    or cannot tell (None: no unambiguous segment, or both kinds seen)."""
    suffixed_only = exact_only = 0
    if not layer_names:
        return None
    for name in tensor_names:
        for part in name.split(";"):
            for segment in part.split("/")[:-1]:
                exact = segment in layer_names
                base = _strip_suffix(segment)
                suffixed = base is not None and base in layer_names
                if suffixed and not exact:
                    suffixed_only += 1
                elif exact and not suffixed:
                    exact_only += 1
    if suffixed_only and not exact_only:
        return True
    if exact_only and not suffixed_only:
        return False
    return None
