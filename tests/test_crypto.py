"""Client-side encryption (STREAM over ChaCha20-Poly1305): round trips and every tampering refused."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from cloudmanager.crypto import (
    CHUNK,
    HEADER_BYTES,
    SEALED_CHUNK,
    DecryptError,
    Decryptor,
    Key,
    KeyFileError,
    encrypt,
    plain_size,
    sealed_size,
)

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17]


def seal(data: bytes, key: Key) -> bytes:
    out = io.BytesIO()
    assert encrypt(io.BytesIO(data), out, key) == len(out.getvalue())
    return out.getvalue()


def unseal(sealed: bytes, key: Key, piece: int = 5000) -> bytes:
    out = io.BytesIO()
    opener = Decryptor(out, key)
    for start in range(0, len(sealed), piece):
        opener.write(sealed[start:start + piece])
    opener.finish()
    return out.getvalue()


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_sizes(size: int) -> None:
    key = Key.generate()
    data = os.urandom(size)
    sealed = seal(data, key)
    assert len(sealed) == sealed_size(size) and plain_size(len(sealed)) == size
    assert unseal(sealed, key) == data
    assert len(data) < 16 or data[:16] not in sealed  # (a byte or two may occur by chance)
    assert seal(data, key) != sealed  # a fresh salt each time


def test_wrong_key_is_named() -> None:
    sealed = seal(b"secret", Key.generate())
    with pytest.raises(DecryptError, match="another key"):
        unseal(sealed, Key.generate())


def mutations(sealed: bytes) -> dict[str, bytes]:
    body = sealed[HEADER_BYTES:]
    first, second = body[:SEALED_CHUNK], body[SEALED_CHUNK:2 * SEALED_CHUNK]
    return {
        "flipped bit in a chunk": sealed[:HEADER_BYTES + 10] + bytes([sealed[HEADER_BYTES + 10] ^ 1])
        + sealed[HEADER_BYTES + 11:],
        "flipped bit in the salt": sealed[:HEADER_BYTES - 1] + bytes([sealed[HEADER_BYTES - 1] ^ 1])
        + sealed[HEADER_BYTES:],
        "truncated at a chunk boundary": sealed[:HEADER_BYTES + 2 * SEALED_CHUNK],
        "truncated mid-chunk": sealed[:-100],
        "last chunk dropped": sealed[:HEADER_BYTES + 2 * SEALED_CHUNK] + body[3 * SEALED_CHUNK:],
        "chunks reordered": sealed[:HEADER_BYTES] + second + first + body[2 * SEALED_CHUNK:],
        "bytes appended": sealed + b"\0" * 16,
        "header only": sealed[:HEADER_BYTES],
        "half a header": sealed[:10],
        "not encrypted": b"plain text " * 100,
    }


@pytest.mark.parametrize("case", list(mutations(b"\0" * (HEADER_BYTES + 4 * SEALED_CHUNK))))
def test_tampering_is_refused_and_nothing_unauthenticated_is_written(case: str) -> None:
    key = Key.generate()
    data = os.urandom(3 * CHUNK + 100)
    bad = mutations(seal(data, key))[case]
    out = io.BytesIO()
    opener = Decryptor(out, key)
    with pytest.raises(DecryptError):
        opener.write(bad)
        opener.finish()
    assert data.startswith(out.getvalue())  # only authentic chunks ever came out


def test_another_objects_chunk_is_refused() -> None:
    key = Key.generate()
    one, two = seal(b"a" * (2 * CHUNK), key), seal(b"b" * (2 * CHUNK), key)
    spliced = one[:HEADER_BYTES + SEALED_CHUNK] + two[HEADER_BYTES + SEALED_CHUNK:]
    with pytest.raises(DecryptError, match="not authentic"):
        unseal(spliced, key)


def test_key_file_is_private_never_overwritten_and_round_trips(tmp_path: Path) -> None:
    key = Key.generate()
    path = tmp_path / "keys" / "key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="exists already"):
        Key.generate().save(path)
    again = Key.load(path)
    assert again.fingerprint == key.fingerprint and again.object_name("a" * 64) == key.object_name("a" * 64)
    assert key.export() not in repr(key) and key.fingerprint in repr(key)


@pytest.mark.parametrize("text", ["", "hello", "cloudmanager-key-v1:!!!", "cloudmanager-key-v1:AAAA"])
def test_bad_key_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(KeyFileError):
        Key.parse(text)


def test_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cm key init"):
        Key.load(tmp_path / "nothing")


def test_object_names_hide_the_hash() -> None:
    key = Key.generate()
    digest = "ab" * 32
    name = key.object_name(digest)
    assert len(name) == 64 and name != digest and Key.generate().object_name(digest) != name
