"""What a model costs to download: its gzip size, as `gzip -9` makes it and as edgeport's .tflite.gz ships it.

A pruned int8 model is as large as the dense one until something compresses it, so the compressed
size is the number that says what unstructured sparsity buys (OTA updates, app downloads, CDNs).
How much it buys depends on the encoder, not only on the zeros. DEFLATE's LZ77 stage codes every run
of three or more zero bytes as a back-reference, and on scattered zeros such a match costs more bits
than the three 1-bit literals it replaces: at 50% sparsity `gzip -9` lands 7-8 points short of what the
bytes' entropy allows (measured on four MNIST CNNs in benchmarks/pruning_results.md). zlib's
``Z_FILTERED`` strategy keeps only matches of six bytes or more and Huffman-codes the rest, the right
trade for quantized weights. :func:`gzip_best` tries both strategies and keeps the smaller
stream: a standard gzip file (RFC 1952; `gunzip` and every HTTP client read it), byte-for-byte
reproducible (no name, mtime 0), never larger than `gzip -9`'s. The report gives both numbers, named.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass

HOW_GZIP9 = "gzip -9: zlib level 9, default strategy, as the gzip tool writes it (Python gzip, mtime 0)"
HOW_BEST = "edgeport .tflite.gz: the smaller of zlib level 9 default and Z_FILTERED streams (standard gzip, mtime 0)"
_STRATEGIES = {"default": zlib.Z_DEFAULT_STRATEGY, "filtered": zlib.Z_FILTERED}


def gzip9_size(blob: bytes) -> int:
    """Bytes of `gzip -9 < file`: the number a user reproduces with the gzip tool."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def _gzip_stream(blob: bytes, strategy: int) -> bytes:
    # wbits 31 = a gzip wrapper with zlib's fixed header (mtime 0, no file name): reproducible bytes.
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31, 8, strategy)
    return encoder.compress(blob) + encoder.flush()


def gzip_best(blob: bytes) -> tuple[bytes, str]:
    """The smallest standard gzip stream zlib makes of ``blob``, and the strategy that made it."""
    streams = {name: _gzip_stream(blob, strategy) for name, strategy in _STRATEGIES.items()}
    name = min(streams, key=lambda n: (len(streams[n]), n != "default"))
    return streams[name], name


@dataclass(frozen=True)
class CompressedSize:
    """One file's raw size, its `gzip -9` size and the size of the .tflite.gz edgeport writes."""

    raw: int
    gzip9: int
    best: int
    strategy: str

    @classmethod
    def of(cls, blob: bytes) -> CompressedSize:
        stream, strategy = gzip_best(blob)
        return cls(raw=len(blob), gzip9=gzip9_size(blob), best=len(stream), strategy=strategy)
