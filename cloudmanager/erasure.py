"""Erasure coding: cut a file into N shares of which any K rebuild it (zfec).

zfec (the Reed-Solomon coder Tahoe-LAFS uses) does the coding; this module
streams a file through it segment by segment, so memory stays at one segment
(K x BLOCK bytes) whatever the file size.

Each segment of K x BLOCK bytes of the input (the last one shorter: cut into K
blocks of ``ceil(rest / K)`` bytes, zero-padded) becomes one block in each of the
N shares.  A share is ``MAGIC | k | n | index | 0 | block (4) | size (8) |
object id (32) | blocks``; the header lets a decoder check that the shares it
was given belong together, to this object, at the index the catalog says.
Whether a share's bytes are intact is the caller's check: the catalog keeps
each share's SHA-256.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zfec

from .errors import CloudManagerError
from .streams import Sink, write_all

MAGIC = b"cmS1"
BLOCK = 256 * 1024
_HEADER = struct.Struct(">4sBBBxIQ32s")
HEADER_BYTES = _HEADER.size
MAX_SHARES = 256  # zfec's limit
_SPREAD = re.compile(r"\s*(\d{1,3})\s*/\s*(\d{1,3})\s*")


class Readable(Protocol):
    """Where a share is read from: a binary file, or a pipe from a download."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end."""


class ShareError(CloudManagerError):
    """Shares that cannot rebuild the file: damaged, truncated, or not of this file."""


@dataclass(frozen=True)
class Spread:
    """A spread policy: ``n`` shares, any ``k`` of which rebuild the file."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise ValueError(f"a spread K/N needs 1 <= K <= N <= {MAX_SHARES}, not {self.k}/{self.n}")

    @classmethod
    def parse(cls, text: str) -> Spread:
        """``"3/5"`` -> Spread(3, 5); ValueError with the rule otherwise."""
        match = _SPREAD.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"a spread is written K/N, e.g. 3/5 (any 3 of 5 shares rebuild the file), "
                             f"not {str(text)[:20]!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def share_size(self, size: int) -> int:
        """The size of each share of a ``size``-byte file."""
        full, rest = divmod(size, self.k * BLOCK)
        return HEADER_BYTES + full * BLOCK + -(-rest // self.k)


def _segments(size: int, k: int) -> list[tuple[int, int]]:
    """(block length, count) runs of the segments of a ``size``-byte file."""
    full, rest = divmod(size, k * BLOCK)
    runs = [(BLOCK, full)] if full else []
    if rest:
        runs.append((-(-rest // k), 1))
    return runs


def _read_exactly(source: Readable, count: int) -> bytes:
    data = source.read(count)
    while len(data) < count:
        more = source.read(count - len(data))
        if not more:
            break
        data += more
    return data


def encode(source: BinaryIO, size: int, spread: Spread, object_id: bytes, outputs: Sequence[Sink]) -> None:
    """Cut ``size`` bytes read from ``source`` into ``spread.n`` shares, written to ``outputs``.

    ``object_id`` (32 bytes) names the object in every share's header.  Raises
    ShareError when ``source`` ends before ``size`` bytes.
    """
    if len(outputs) != spread.n or len(object_id) != 32:
        raise ValueError("encode needs one output per share and a 32-byte object id")
    encoder = zfec.Encoder(spread.k, spread.n)
    for index, out in enumerate(outputs):
        write_all(out, _HEADER.pack(MAGIC, spread.k, spread.n, index, BLOCK, size, object_id))
    buffer = bytearray(spread.k * BLOCK)
    left = size
    for block, count in _segments(size, spread.k):
        segment = memoryview(buffer)[: block * spread.k]
        for _ in range(count):
            want = min(left, len(segment))
            got = _read_into(source, segment[:want])
            if got != want:
                raise ShareError(f"the source ended {left - got} bytes early")
            segment[want:] = bytes(len(segment) - want)  # the last segment's padding
            left -= want
            blocks = tuple(segment[i * block:(i + 1) * block] for i in range(spread.k))
            for out, piece in zip(outputs, encoder.encode(blocks), strict=True):
                write_all(out, piece)


def _read_into(source: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``source``; the count read (short only at the end)."""
    done = 0
    while done < len(view):
        count = source.readinto(view[done:])  # type: ignore[attr-defined]
        if not count:
            break
        done += count
    return done


def decode(shares: Mapping[int, Readable], spread: Spread, size: int, object_id: bytes, out: Sink) -> None:
    """Rebuild the ``size``-byte object from ``spread.k`` shares (index -> readable share)
    into ``out``.  Raises ShareError when a share is not what it should be."""
    if len(shares) < spread.k:
        raise ShareError(f"{len(shares)} shares cannot rebuild a {spread} file: it needs {spread.k}")
    chosen = sorted(shares)[: spread.k]
    for index in chosen:
        header = _read_exactly(shares[index], HEADER_BYTES)
        if len(header) != HEADER_BYTES:
            raise ShareError(f"share {index} is truncated (no complete header)")
        magic, k, n, got_index, block, got_size, got_id = _HEADER.unpack(header)
        if magic != MAGIC or block != BLOCK:
            raise ShareError(f"share {index} is not a cloudmanager share")
        if (k, n, got_index, got_size, got_id) != (spread.k, spread.n, index, size, object_id):
            raise ShareError(f"share {index} belongs to another file or another index")
    decoder = zfec.Decoder(spread.k, spread.n)
    left = size
    for block, count in _segments(size, spread.k):
        for _ in range(count):
            pieces = []
            for index in chosen:
                piece = _read_exactly(shares[index], block)
                if len(piece) != block:
                    raise ShareError(f"share {index} is truncated")
                pieces.append(piece)
            segment = b"".join(decoder.decode(pieces, chosen))
            keep = min(left, len(segment))
            write_all(out, segment if keep == len(segment) else memoryview(segment)[:keep])
            left -= keep
    for index in chosen:
        if shares[index].read(1):
            raise ShareError(f"share {index} has bytes beyond its end")
