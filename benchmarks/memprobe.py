"""Child process of the memory figure: one ``upload`` or ``warm_up``, and the peak RSS it took.

    python memprobe.py upload  FOLDER SOURCE CAPACITY
    python memprobe.py warm_up FOLDER DIGEST CAPACITY

Opens the node kept in FOLDER (catalog, cache and folder host, as figures.py
lays them out), makes the one call and prints a JSON object: ``result`` (what
the call returned), ``rest_kib`` (RSS right before the call), ``before_kib`` and
``peak_kib`` (ru_maxrss before and after the call), all in KiB (Linux).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
from pathlib import Path

from harness import host_url, open_node


def rss_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    """The resident set size of a process (this one by default) now, in KiB; with
    ``field="VmHWM"``, the largest it has been (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Make the process's peak RSS (VmHWM) its RSS now; False when Linux refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def peak_kib() -> int:
    """The largest resident set size this process has had, in KiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str]) -> int:
    """Run the call named by ``argv`` and print the report."""
    call, folder, argument, capacity = argv
    with open_node(Path(folder), int(capacity), [host_url(Path(folder))]) as cm:
        method = {"upload": cm.upload, "warm_up": cm.warm_up}[call]
        gc.collect()
        rest, before = rss_kib(), peak_kib()
        result = method(argument)
        peak = peak_kib()
    print(json.dumps({"result": result, "rest_kib": rest, "before_kib": before, "peak_kib": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
