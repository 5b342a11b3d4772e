"""Erasure coding (zfec): any K of N shares rebuild the file; wrong shares are refused."""

from __future__ import annotations

import io
import itertools
import os

import pytest

from cloudmanager.erasure import BLOCK, HEADER_BYTES, ShareError, Spread, decode, encode

OBJECT = bytes(range(32))


def cut(data: bytes, spread: Spread, object_id: bytes = OBJECT) -> list[bytes]:
    outputs = [io.BytesIO() for _ in range(spread.n)]
    encode(io.BytesIO(data), len(data), spread, object_id, outputs)  # type: ignore[arg-type]
    return [o.getvalue() for o in outputs]


def rebuild(shares: dict[int, bytes], spread: Spread, size: int, object_id: bytes = OBJECT) -> bytes:
    out = io.BytesIO()
    decode({i: io.BytesIO(s) for i, s in shares.items()}, spread, size, object_id, out)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 2, 1000, 3 * BLOCK, 3 * BLOCK + 1, 7 * BLOCK + 5])
def test_any_k_of_n_rebuild_the_file(size: int) -> None:
    spread = Spread(3, 5)
    data = os.urandom(size)
    shares = cut(data, spread)
    assert all(len(s) == spread.share_size(size) for s in shares)
    for combo in itertools.combinations(range(5), 3):
        assert rebuild({i: shares[i] for i in combo}, spread, size) == data


def test_shares_store_five_thirds_of_the_file() -> None:
    spread = Spread(3, 5)
    size = 30 * BLOCK
    assert 5 * spread.share_size(size) == 5 * size // 3 + 5 * HEADER_BYTES


@pytest.mark.parametrize("text, k, n", [("3/5", 3, 5), (" 1 / 1 ", 1, 1), ("10/20", 10, 20)])
def test_spread_parses(text: str, k: int, n: int) -> None:
    assert Spread.parse(text) == Spread(k, n) and str(Spread(k, n)) == f"{k}/{n}"


@pytest.mark.parametrize("text", ["", "3", "5/3", "0/2", "3/500", "a/b", "3/5/7"])
def test_bad_spread_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"K/N|K <= N"):
        Spread.parse(text)


def test_too_few_shares() -> None:
    spread = Spread(3, 5)
    shares = cut(b"data", spread)
    with pytest.raises(ShareError, match="needs 3"):
        rebuild({0: shares[0], 4: shares[4]}, spread, 4)


def test_a_share_of_another_file_or_index_is_refused() -> None:
    spread = Spread(2, 3)
    data = os.urandom(5000)
    mine, other = cut(data, spread), cut(data, spread, bytes(32))
    with pytest.raises(ShareError, match="another file"):
        rebuild({0: mine[0], 1: other[1]}, spread, len(data))
    with pytest.raises(ShareError, match="another file or another index"):
        rebuild({0: mine[0], 1: mine[2]}, spread, len(data))


def test_truncated_and_overlong_shares_are_refused() -> None:
    spread = Spread(2, 3)
    data = os.urandom(3 * BLOCK)
    shares = cut(data, spread)
    with pytest.raises(ShareError, match="truncated"):
        rebuild({0: shares[0], 1: shares[1][:-1]}, spread, len(data))
    with pytest.raises(ShareError, match="truncated"):
        rebuild({0: shares[0][:10], 1: shares[1]}, spread, len(data))
    with pytest.raises(ShareError, match="beyond its end"):
        rebuild({0: shares[0], 1: shares[1] + b"x"}, spread, len(data))
    with pytest.raises(ShareError, match="not a cloudmanager share"):
        rebuild({0: b"x" * HEADER_BYTES + shares[0][HEADER_BYTES:], 1: shares[1]}, spread, len(data))


def test_a_short_source_is_an_error() -> None:
    with pytest.raises(ShareError, match="early"):
        encode(io.BytesIO(b"abc"), 10, Spread(2, 3), OBJECT, [io.BytesIO() for _ in range(3)])
