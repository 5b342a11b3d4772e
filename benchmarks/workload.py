"""Generated catalog contents: records in the exchange format "0.2", and the same rows as tuples."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloudmanager.payload import FORMAT_VERSION, PEER_ERROR

#: The two hosts every generated file was sent to.
HOSTS = ("vault-a", "vault-b")

FileRow = tuple[str, str, int, int]  # hash, name, size, datetime
UploadRow = tuple[str, str, str | None, str | None, int]  # hash, host, url, error, time


def digest(tag: str, index: int) -> str:
    """A made-up SHA-256 (64 lowercase hex digits), distinct per (tag, index)."""
    return hashlib.sha256(f"{tag}-{index}".encode()).hexdigest()


@dataclass(frozen=True)
class Workload:
    """``count`` files, as the JSON text a node dumps and as already-parsed table rows."""

    text: str
    hashes: list[str]
    files: list[FileRow]
    uploads: list[UploadRow]


def folder_url(host: str, key: str) -> str:
    """Where a folder host named ``host`` would keep the file ``key``."""
    return f"file:///srv/{host}/{key[:2]}/{key[2:4]}/{key}"


def make_workload(count: int, seed: int = 1, locator: Callable[[str, str], str] = folder_url) -> Workload:
    """Records of ``count`` files, each on two hosts: the first holds it (a URL, from
    ``locator(host, hash)``); the second holds every other file and reported an error
    for the rest."""
    rng = random.Random(seed)
    now = int(time.time())
    records: list[dict[str, Any]] = []
    files: list[FileRow] = []
    uploads: list[UploadRow] = []
    hashes: list[str] = []
    for index in range(count):
        key = digest("file", index)
        name, size, when = f"file-{index:06d}.bin", rng.randrange(1, 1 << 32), 1_600_000_000 + index
        entries: list[dict[str, Any]] = []
        for position, host in enumerate(HOSTS):
            if position == 1 and index % 2:
                entries.append({"host_name": host, "error": True})
                uploads.append((key, host, None, PEER_ERROR, now))
            else:
                url = locator(host, key)
                entries.append({"host_name": host, "url": url})
                uploads.append((key, host, url, None, now))
        records.append({"version": FORMAT_VERSION, "datetime": str(when), "filename": name,
                        "filesize": str(size), "filehash": key, "uploads": entries})
        files.append((key, name, size, when))
        hashes.append(key)
    return Workload(json.dumps(records), hashes, files, uploads)


def lookup_mix(present: Sequence[str], count: int, seed: int = 2) -> list[str]:
    """``count`` hashes to look up, shuffled: half of them ``present``, half unknown."""
    rng = random.Random(seed)
    known = rng.sample(list(present), count // 2)
    unknown = [digest("absent", index) for index in range(count - len(known))]
    mix = known + unknown
    rng.shuffle(mix)
    return mix
