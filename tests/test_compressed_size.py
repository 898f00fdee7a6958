"""Compressed size (exporter.analyze.compressed): the numbers the sparsity report and --gzip rest on."""

from __future__ import annotations

import gzip

import numpy as np

from exporter.analyze.compressed import CompressedSize, gzip9_size, gzip_best


def _int8_weights(sparsity: float, size: int = 40_000, seed: int = 0) -> bytes:
    """Quantized-looking weights: uniform int8 values, a ``sparsity`` fraction of them zeroed at random."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-127, 128, size=size).astype(np.int8)
    values[rng.random(size) < sparsity] = 0
    return values.tobytes()


def test_gzip_best_is_a_standard_reproducible_gzip_never_larger_than_gzip9():
    for blob in (_int8_weights(0.0), _int8_weights(0.5), b"\x00" * 5000 + b"edgeport" * 300):
        stream, strategy = gzip_best(blob)
        assert gzip.decompress(stream) == blob
        assert gzip_best(blob) == (stream, strategy)  # same bytes every run: make sees no change
        assert len(stream) <= gzip9_size(blob)


def test_scattered_zeros_compress_better_without_short_matches():
    """At 50% random zeros, gzip -9's 3-byte zero matches cost more than literals; the filtered stream wins."""
    dense, sparse = CompressedSize.of(_int8_weights(0.0)), CompressedSize.of(_int8_weights(0.5))
    assert sparse.strategy == "filtered"
    gzip9_drop = 1 - sparse.gzip9 / dense.gzip9
    best_drop = 1 - sparse.best / dense.best
    # Order-0 entropy bound for these bytes: 1 - (1 + 0.5 * 8) / 8 = 37.5%.
    assert best_drop > gzip9_drop + 0.03, (gzip9_drop, best_drop)
    assert 0.30 < best_drop < 0.375
    assert sparse.raw == dense.raw == 40_000
