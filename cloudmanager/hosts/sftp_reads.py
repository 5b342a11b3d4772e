"""Reading a file over SFTP with requests sent ahead, from the calling thread.

paramiko's own read-ahead (``SFTPFile.prefetch``, ``readv``) sends its requests
from a helper thread that races the reader: when the reader has taken every
answer while the helper is still sending, paramiko stops reading ahead and the
later answers pile up in memory unused, and a connection dropped while the
helper sends kills it with a traceback.  Driving that machinery from outside
takes paramiko's private attributes.  This module uses only paramiko's public
:class:`~paramiko.Channel`: it opens an ``sftp`` subsystem channel of its own
on the connection and speaks the few SFTP version 3 messages a download needs
(INIT, OPEN, READ, CLOSE; draft-ietf-secsh-filexfer-02), every request written
by the caller's thread and every failure raised there.
"""

from __future__ import annotations

import collections
import errno
import struct
from collections.abc import Iterator

import paramiko

_INIT, _VERSION, _OPEN, _CLOSE, _READ = 1, 2, 3, 4, 5
_STATUS, _HANDLE, _DATA = 101, 102, 103
_FX_EOF, _FX_NO_SUCH_FILE, _FX_PERMISSION_DENIED = 1, 2, 3
_READ_FLAG = 0x00000001
#: The longest message accepted from the server (a READ answer is at most a request's size).
_MAX_MESSAGE = 512 * 1024


class _EndOfFile(OSError):
    """The server's SFTP end-of-file status (not EOFError, which means a lost connection)."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Message:
    """The fields of one answer, read in order."""

    def __init__(self, body: bytes):
        self._body = body
        self._at = 0

    def uint32(self) -> int:
        value: int = struct.unpack_from(">I", self._body, self._at)[0]
        self._at += 4
        return value

    def string(self) -> bytes:
        size = self.uint32()
        value = self._body[self._at:self._at + size]
        if len(value) != size:
            raise paramiko.SFTPError("a truncated SFTP message")
        self._at += size
        return value


class Reader:
    """One ``sftp`` channel used to read one file: ``pieces`` yields its bytes in order."""

    def __init__(self, transport: paramiko.Transport, timeout: float):
        self._channel = transport.open_session(timeout=timeout)
        try:
            self._channel.settimeout(timeout)
            self._channel.invoke_subsystem("sftp")
            self._send(_INIT, struct.pack(">I", 3))
            kind, _ = self._receive()
            if kind != _VERSION:
                raise paramiko.SFTPError("the server did not start an SFTP session")
        except BaseException:
            self._channel.close()
            raise
        self._next_id = 0

    def close(self) -> None:
        """Close the channel (the server closes the file with it)."""
        self._channel.close()

    # -- messages ---------------------------------------------------------------------

    def _send(self, kind: int, payload: bytes) -> None:
        self._channel.sendall(struct.pack(">IB", len(payload) + 1, kind) + payload)

    def _exactly(self, size: int) -> bytes:
        data = self._channel.recv(size)
        if len(data) == size:  # the usual case: no copy
            return data
        parts = [data]
        got = len(data)
        while got < size:
            if not parts[-1]:
                raise EOFError("the SFTP channel closed")
            parts.append(self._channel.recv(size - got))
            got += len(parts[-1])
        return b"".join(parts)

    def _receive(self) -> tuple[int, _Message]:
        length, kind = struct.unpack(">IB", self._exactly(5))
        if not 1 <= length <= _MAX_MESSAGE:
            raise paramiko.SFTPError(f"an SFTP message of {length} bytes")
        return kind, _Message(self._exactly(length - 1))

    def _request(self, kind: int, payload: bytes) -> int:
        self._next_id += 1
        self._send(kind, struct.pack(">I", self._next_id) + payload)
        return self._next_id

    @staticmethod
    def _failure(answer: _Message, path: str) -> OSError | None:
        """The error a STATUS answer stands for (None for OK); EOF is an OSError too."""
        code = answer.uint32()
        text = answer.string().decode("utf-8", "replace")
        if code == 0:
            return None
        if code == _FX_NO_SUCH_FILE:
            return FileNotFoundError(errno.ENOENT, text or "no such file", path)
        if code == _FX_PERMISSION_DENIED:
            return PermissionError(errno.EACCES, text or "permission denied", path)
        if code == _FX_EOF:
            return _EndOfFile(text or "end of file")
        return OSError(errno.EIO, text or f"SFTP status {code}", path)

    def _answer(self, expected: int, path: str) -> tuple[int, _Message]:
        kind, answer = self._receive()
        if answer.uint32() != expected:
            raise paramiko.SFTPError("an SFTP answer out of order")
        return kind, answer

    # -- reading ----------------------------------------------------------------------

    def pieces(self, path: str, size: int, piece: int, ahead: int) -> Iterator[bytes]:
        """The bytes of ``path`` (``size`` bytes long), in order, in pieces of at most
        ``piece`` bytes, with up to ``ahead`` bytes requested ahead of the one read.

        FileNotFoundError or PermissionError when the server refuses the file;
        EOFError, TimeoutError or SFTPError when the connection fails.  Stops
        early when the file turns out shorter (the caller's hash check tells).
        """
        asked = self._request(_OPEN, _string(path.encode()) + struct.pack(">II", _READ_FLAG, 0))
        kind, answer = self._answer(asked, path)
        if kind == _STATUS:
            raise self._failure(answer, path) or paramiko.SFTPError("OPEN answered OK without a handle")
        if kind != _HANDLE:
            raise paramiko.SFTPError(f"OPEN answered with message type {kind}")
        handle = _string(answer.string())
        pending: collections.deque[tuple[int, int, int]] = collections.deque()  # (id, offset, length)
        offset = 0
        while True:
            while offset < size and len(pending) * piece < ahead:
                length = min(piece, size - offset)
                pending.append((self._request(_READ, handle + struct.pack(">QI", offset, length)),
                                offset, length))
                offset += length
            if not pending:
                break
            asked, at, length = pending.popleft()
            kind, answer = self._answer(asked, path)
            if kind == _STATUS:
                failure = self._failure(answer, path)
                if isinstance(failure, _EndOfFile):
                    return
                raise failure or paramiko.SFTPError("READ answered OK without data")
            if kind != _DATA:
                raise paramiko.SFTPError(f"READ answered with message type {kind}")
            data = answer.string()
            if not data:
                return
            yield data
            if len(data) < length:  # a short read (a server with a smaller limit): ask again from there
                for asked, _, _ in pending:
                    self._answer(asked, path)
                pending.clear()
                offset = at + len(data)
        self._request(_CLOSE, handle)  # answered or not, the channel's close ends it


