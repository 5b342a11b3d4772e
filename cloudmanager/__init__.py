"""cloudmanager: keep a pool of files on several hosts, with a local LRU cache.

    import cloudmanager
    cm = cloudmanager.CloudManager("catalog.sqlite3", "cache/", 20 * 2**30)
    digest = cm.upload("/path/to/file")
    cm.warm_up(digest)   # path of the cached copy

See ``help(cloudmanager.CloudManager)``.
"""

from .errors import (
    CloudManagerError,
    HostError,
    InvalidDump,
    InvalidHash,
    ObjectMissing,
    PageTooLarge,
    Unavailable,
)
from .manager import CloudManager, RepairReport

__version__ = "0.3.0"

__all__ = [
    "CloudManager",
    "CloudManagerError",
    "HostError",
    "InvalidDump",
    "InvalidHash",
    "ObjectMissing",
    "PageTooLarge",
    "RepairReport",
    "Unavailable",
    "__version__",
]
