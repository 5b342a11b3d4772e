"""Client-side encryption of what hosts receive: STREAM over ChaCha20-Poly1305.

No cryptography is made here; the ``cryptography`` package does it.  This module
only lays out the bytes, following the STREAM construction (Hoang, Reyhanitabar,
Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance", 2015) as the age format (age-encryption.org/v1) uses it for
its payload:

* Every object gets a fresh random 16-byte salt; its content key is
  HKDF-SHA-256(master key, salt, "cloudmanager payload v1").  A key is thus never
  used for two objects, and nonces can be counters.
* The plaintext is cut into chunks of 64 KiB; chunk *i* is sealed with
  ChaCha20-Poly1305 under the nonce ``i`` (11 bytes, big-endian) followed by one
  flag byte, 1 for the last chunk and 0 otherwise.  Reordered, dropped or
  repeated chunks fail authentication (the counter), and so does a truncated
  object (the last-chunk flag).  Only an empty plaintext has an empty last chunk.
* An object is ``MAGIC | key id (8) | salt (16) | sealed chunks``.  The key id
  says which key sealed it, so a wrong key is named as such.  The header is
  bound to the chunks through the salt: another salt gives another key.

Object names on hosts are keyed hashes, HMAC-SHA-256(name key, SHA-256 of the
plaintext), so a host learns neither the file's name nor its hash.

Both directions stream: memory stays at one chunk whatever the file size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CloudManagerError
from .streams import Sink, write_all

MAGIC = b"cmE1"
KEY_BYTES = 32
ID_BYTES = 8
SALT_BYTES = 16
HEADER_BYTES = len(MAGIC) + ID_BYTES + SALT_BYTES
CHUNK = 64 * 1024
TAG_BYTES = 16
SEALED_CHUNK = CHUNK + TAG_BYTES
_KEY_PREFIX = "cloudmanager-key-v1:"


class KeyFileError(CloudManagerError):
    """A key file that is missing, unreadable or not a cloudmanager key."""


class DecryptError(CloudManagerError):
    """Bytes that are not an object sealed with this key: tampered, truncated,
    reordered, from another key, or not encrypted at all."""


class Key:
    """A master key: 32 random bytes.  Its text form never appears in output or logs."""

    def __init__(self, secret: bytes):
        if len(secret) != KEY_BYTES:
            raise KeyFileError(f"a key has {KEY_BYTES} bytes, not {len(secret)}")
        self._secret = secret
        self.id = self._derive(b"cloudmanager key id v1", ID_BYTES)
        self._names = self._derive(b"cloudmanager names v1", KEY_BYTES)

    def __repr__(self) -> str:
        return f"<Key {self.fingerprint}>"

    @classmethod
    def generate(cls) -> Key:
        """A new random key."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @property
    def fingerprint(self) -> str:
        """A public identifier of the key (hex of its key id): safe to show."""
        return self.id.hex()

    def export(self) -> str:
        """The key as one line of text, for a backup.  Whoever has it reads every file."""
        return _KEY_PREFIX + base64.urlsafe_b64encode(self._secret).decode("ascii")

    @classmethod
    def parse(cls, text: str) -> Key:
        """A key from its exported text."""
        text = text.strip()
        if not text.startswith(_KEY_PREFIX):
            raise KeyFileError("not a cloudmanager key (it should start with " f"{_KEY_PREFIX!r})")
        try:
            secret = base64.urlsafe_b64decode(text[len(_KEY_PREFIX):].encode("ascii"))
        except (ValueError, UnicodeError):
            raise KeyFileError("the key text is damaged") from None
        return cls(secret)

    @classmethod
    def load(cls, path: Path) -> Key:
        """Read a key file."""
        try:
            return cls.parse(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            raise KeyFileError(f"no key file at {path}: create one with `cm key init`") from None
        except (OSError, UnicodeError) as exc:
            raise KeyFileError(f"cannot read the key file {path}: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the key to a new file readable by its owner only (never overwrites)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"a key file exists already at {path}: it is kept") from None
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self.export() + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _derive(self, info: bytes, length: int, salt: bytes | None = None) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(self._secret)

    def object_name(self, digest: str) -> str:
        """The name an encrypted file gets on a host: reveals neither name nor hash."""
        return hmac.new(self._names, digest.encode("ascii"), hashlib.sha256).hexdigest()

    def _cipher(self, salt: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(self._derive(b"cloudmanager payload v1", KEY_BYTES, salt))


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(source: BinaryIO, out: Sink, key: Key) -> int:
    """Seal ``source`` (read to its end) into ``out``; returns the bytes written."""
    salt = secrets.token_bytes(SALT_BYTES)
    cipher = key._cipher(salt)
    header = MAGIC + key.id + salt
    write_all(out, header)
    written = len(header)
    counter = 0
    chunk = source.read(CHUNK)
    while True:
        following = source.read(CHUNK) if len(chunk) == CHUNK else b""
        last = not following
        sealed = cipher.encrypt(_nonce(counter, last), chunk, None)
        write_all(out, sealed)
        written += len(sealed)
        if last:
            return written
        counter += 1
        chunk = following


class Decryptor:
    """A write-only sink that opens sealed bytes as they arrive and writes the
    plaintext to ``out``; :meth:`finish` must be called at the end.

    Raises DecryptError as soon as something is wrong; nothing unauthenticated
    is ever written to ``out``.
    """

    def __init__(self, out: Sink, key: Key):
        self._out = out
        self._key = key
        self._pending = bytearray()
        self._cipher: ChaCha20Poly1305 | None = None
        self._counter = 0
        self._done = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Take more sealed bytes."""
        if self._done:
            raise DecryptError("bytes after the last chunk")
        self._pending += data
        if self._cipher is None:
            if len(self._pending) < HEADER_BYTES:
                return len(data)
            self._start()
        # A chunk is known not to be the last only once bytes beyond it have come.
        while len(self._pending) > SEALED_CHUNK:
            self._open(bytes(self._pending[:SEALED_CHUNK]), last=False)
            del self._pending[:SEALED_CHUNK]
        return len(data)

    def _start(self) -> None:
        header = bytes(self._pending[:HEADER_BYTES])
        if header[: len(MAGIC)] != MAGIC:
            raise DecryptError("not an encrypted object (no cloudmanager header)")
        if not hmac.compare_digest(header[len(MAGIC): len(MAGIC) + ID_BYTES], self._key.id):
            raise DecryptError("encrypted with another key")
        self._cipher = self._key._cipher(header[len(MAGIC) + ID_BYTES:])
        del self._pending[:HEADER_BYTES]

    def _open(self, sealed: bytes, *, last: bool) -> None:
        assert self._cipher is not None
        try:
            plain = self._cipher.decrypt(_nonce(self._counter, last), sealed, None)
        except InvalidTag:
            raise DecryptError(f"chunk {self._counter} is not authentic: tampered, truncated, "
                               "reordered or from another object") from None
        self._counter += 1
        write_all(self._out, plain)

    def finish(self) -> None:
        """The end of the sealed bytes: open the last chunk (DecryptError if it is not)."""
        if self._done:
            return
        if self._cipher is None:
            raise DecryptError("truncated: the header is incomplete")
        if len(self._pending) < TAG_BYTES:
            raise DecryptError("truncated: the last chunk is missing")
        self._open(bytes(self._pending), last=True)
        self._pending.clear()
        self._done = True


def sealed_size(plain: int) -> int:
    """The size of the sealed object of a ``plain``-byte file."""
    chunks = max(1, -(-plain // CHUNK))
    return HEADER_BYTES + plain + chunks * TAG_BYTES


def plain_size(sealed: int) -> int | None:
    """The plaintext size a sealed object of ``sealed`` bytes holds (None: impossible size)."""
    body = sealed - HEADER_BYTES
    if body < TAG_BYTES:
        return None
    chunks = -(-body // SEALED_CHUNK)
    plain = body - chunks * TAG_BYTES
    return plain if plain >= 0 and sealed_size(plain) == sealed else None
