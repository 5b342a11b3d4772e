"""Hosts: the places files are sent to.  See base.py for the contract."""

from .base import Adopter, ByHash, Checker, Deleter, Host
from .folder import FolderHost
from .memory import MemoryHost
from .plowshare import PlowshareHost
from .registry import HostSpec, make_host, make_hosts, register, schemes

__all__ = [
    "Adopter",
    "ByHash",
    "Checker",
    "Deleter",
    "FolderHost",
    "Host",
    "HostSpec",
    "MemoryHost",
    "PlowshareHost",
    "make_host",
    "make_hosts",
    "register",
    "schemes",
]
