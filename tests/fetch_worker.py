"""A child process that warms one file up through a folder host whose downloads are logged.

    python -m tests.fetch_worker CATALOG CACHE CAPACITY VAULT LOG DIGEST ARRIVALS COUNT MODE

Each download from the folder host VAULT appends this process's id to LOG.  Before
asking for DIGEST the process leaves a file in ARRIVALS; with MODE ``count`` a
download waits until COUNT processes have arrived (so they all ask while it runs),
then streams the file.  With MODE ``hang`` a download never ends (the parent kills
the process while it holds the file's download lock).  Exit status 0 when warm_up
gave the cached copy with the right bytes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

from cloudmanager import CloudManager
from cloudmanager.errors import HostError
from cloudmanager.hosts.folder import FolderHost
from cloudmanager.streams import Sink

#: How long a download waits for the others to arrive, or hangs, at most.
WAIT_S = 120.0


class LoggedFolder(FolderHost):
    """A folder host that logs each download and waits as MODE says."""

    def __init__(self, root: Path, log: Path, arrivals: Path, count: int, mode: str):
        super().__init__(root)
        self.log, self.arrivals, self.count, self.mode = log, arrivals, count, mode

    def download(self, locator: str, out: Sink) -> None:
        """Log, wait, then stream the object (or hang, with MODE ``hang``)."""
        with open(self.log, "a", encoding="ascii") as log:
            log.write(f"{os.getpid()}\n")
        if self.mode == "hang":
            threading.Event().wait(WAIT_S)
            raise HostError(self.name, "hung")
        deadline = time.monotonic() + WAIT_S
        while len(list(self.arrivals.iterdir())) < self.count and time.monotonic() < deadline:
            time.sleep(0.01)
        super().download(locator, out)


def main(argv: list[str]) -> int:
    """Warm DIGEST up; 0 when the cached copy has its bytes."""
    catalog, cache, capacity, vault, log, digest, arrivals, count, mode = argv
    host = LoggedFolder(Path(vault), Path(log), Path(arrivals), int(count), mode)
    with CloudManager(catalog, cache, int(capacity), hosts=[host]) as cm:
        (Path(arrivals) / str(os.getpid())).touch()
        path = cm.warm_up(digest)
        if not path:
            print(f"warm_up gave {path!r}", file=sys.stderr)
            return 1
        return 0 if hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
