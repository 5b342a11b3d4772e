"""The network figures: uploads to real servers on 127.0.0.1, against rclone or against ourselves.

``sftp-many``
    Many small files to one SFTP host (OpenSSH's sshd): ``upload_many``
    against ``rclone copy`` of the same folder to the same server (rclone's
    fast path, ``shell_type = none``), and, for context, ``upload`` in a loop.
``three-hosts``
    One large file to a folder host, an SFTP host and a WebDAV host (WsgiDAV)
    at once, against the slowest of the three alone.

The servers are the tests' own (``tests/servers/``: ``running_sshd`` and
``running_webdav``), so this module needs the repository's source tree: it puts
the repository root on ``sys.path`` and imports them from ``tests.servers``.
Each figure starts its servers and stops them before it returns.  Every trial
uploads to a fresh remote folder; what is inside the clock is said in each trial.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlencode

from figures import ROOMY, Bench, _expect
from harness import (
    MIB,
    Row,
    Stopwatch,
    Target,
    best_of,
    fresh_dir,
    host_url,
    note,
    open_node,
    ratio_row,
    seconds,
    write_random_file,
)

from cloudmanager import CloudManager

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the test servers live in the source tree, not in the package
    sys.path.insert(1, str(REPO))

from tests.servers.sshd import SshdServer, running_sshd  # noqa: E402
from tests.servers.webdav import WebdavServer, running_webdav  # noqa: E402

RCLONE = "rclone"
KIB = 1 << 10


@dataclass(frozen=True)
class NetworkSizes:
    """How big the network figures' work is, and how many rounds each is timed over."""

    many_files: int  # sftp-many: how many small files...
    many_size: int  # ...of how many bytes each
    many_rounds: int
    big_mib: int  # three-hosts: the file's size
    big_rounds: int


FULL = NetworkSizes(many_files=2_000, many_size=4 * KIB, many_rounds=5, big_mib=256, big_rounds=5)
QUICK = NetworkSizes(many_files=300, many_size=4 * KIB, many_rounds=3, big_mib=32, big_rounds=2)

#: A network figure: the shared bench and the sizes of this run.
NetworkFigure = Callable[[Bench, NetworkSizes], list[Row]]


# -- what both figures need ---------------------------------------------------------------


def sftp_url(server: SshdServer, remote: Path) -> str:
    """The ``sftp://`` host URL of ``remote`` on ``server``, logging in with the server's
    client key and trusting its host key only."""
    return f"{server.url(remote)}?{urlencode(server.options())}"


def webdav_url(server: WebdavServer, collection: str) -> str:
    """The ``webdav://user:password@127.0.0.1:PORT/collection`` host URL (quoted)."""
    account = f"{quote(server.user, safe='')}:{quote(server.password, safe='')}"
    return f"webdav://{account}@127.0.0.1:{server.port}/{collection}"


def stored_objects(folder: Path) -> dict[str, int]:
    """The objects a content-addressed host keeps under ``folder`` (``ab/cd/<sha256>``),
    by name, with their sizes; temporary files are left out."""
    found: dict[str, int] = {}
    for where, _, names in os.walk(folder):
        for name in names:
            if len(name) == 64 and not name.startswith("."):
                found[name] = os.stat(os.path.join(where, name)).st_size
    return found


def tool_version(command: Sequence[str]) -> str:
    """The first line a ``--version``-like command prints (for the notes)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


class Remotes:
    """Fresh remote folders on a server that runs on this machine; each trial takes new ones."""

    def __init__(self, root: Path):
        self.root = root
        self._numbers = itertools.count(1)

    def fresh(self, prefix: str) -> Path:
        """A folder under ``root`` that does not exist yet (the host makes it)."""
        return self.root / f"{prefix}-{next(self._numbers)}"


def files_per_second(count: int, elapsed: float) -> str:
    """A rate of files, with the time it took."""
    return f"{count / elapsed:,.0f} files/s ({seconds(elapsed)})"


# -- 1. many small files to one SFTP host -------------------------------------------------


def _write_small_files(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` files of ``size`` random bytes (all distinct) in ``folder``, flushed to disk."""
    folder.mkdir()
    paths = [folder / f"f{index:05d}.bin" for index in range(count)]
    for path in paths:
        path.write_bytes(os.urandom(size))
    os.sync()
    return paths


def rclone_sftp_config(path: Path, server: SshdServer) -> str:
    """Write an rclone.conf with one sftp remote on ``server`` (its key, its known_hosts,
    ``shell_type = none``: rclone's fast path, no ``md5sum`` over ssh per file);
    returns the remote's name."""
    name = "bench"
    path.write_text(
        f"[{name}]\n"
        "type = sftp\n"
        f"host = {server.host}\n"
        f"port = {server.port}\n"
        f"user = {server.user}\n"
        f"key_file = {server.key_file}\n"
        f"known_hosts_file = {server.known_hosts}\n"
        "shell_type = none\n"
    )
    return name


def sftp_many_figure(bench: Bench, sizes: NetworkSizes) -> list[Row]:
    """``upload_many`` of many small files to one SFTP host, against ``rclone copy``."""
    count = sizes.many_files
    source = bench.root / "many-source"
    paths = _write_small_files(source, count, sizes.many_size)
    note(f"  {tool_version([RCLONE, 'version'])}; {tool_version(['ssh', '-V'])}")
    with fresh_dir(bench.root, "sshd") as server_folder, running_sshd(server_folder) as server:
        remotes = Remotes(server.root)
        config = server_folder / "rclone.conf"
        remote_name = rclone_sftp_config(config, server)

        def ours(send: Callable[[CloudManager, list[Path]], Sequence[str | bool]]) -> float:
            """A fresh node (catalog, cache, host) opened before the clock; inside it, the
            uploads, connecting to the server included; the node is closed after it."""
            remote = remotes.fresh("ours")
            with fresh_dir(bench.root, "many-node") as folder:
                with open_node(folder, ROOMY, [sftp_url(server, remote)]) as cm, Stopwatch() as clock:
                    results = send(cm, paths)
                _expect(len({result for result in results if isinstance(result, str)}), count,
                        "distinct files uploaded")
                stored = stored_objects(remote)
                _expect((len(stored), set(stored.values())), (count, {sizes.many_size}),
                        "objects on the SFTP server, and their sizes")
            shutil.rmtree(remote)
            os.sync()  # the next trial starts with nothing left to write back
            return clock.elapsed

        def rclone() -> float:
            """``rclone copy`` of the source folder, the whole process inside the clock."""
            remote = remotes.fresh("rclone")
            command = [RCLONE, "copy", str(source), f"{remote_name}:{remote}",
                       "--config", str(config)]
            with Stopwatch() as clock:
                done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"rclone copy failed ({done.returncode}): {done.stderr}")
            _expect(len(list(remote.iterdir())), count, "files rclone copied")
            shutil.rmtree(remote)
            os.sync()
            return clock.elapsed

        def upload_many(cm: CloudManager, files: list[Path]) -> Sequence[str | bool]:
            return cm.upload_many(files)

        def upload_loop(cm: CloudManager, files: list[Path]) -> Sequence[str | bool]:
            return [cm.upload(path) for path in files]

        best = best_of(sizes.many_rounds, {
            "upload_many": partial(ours, upload_many),
            "rclone": rclone,
            "upload loop": partial(ours, upload_loop),
        })
    shutil.rmtree(source)
    what = f"{count:,} x {sizes.many_size // KIB} KiB, 1 SFTP host"
    many, peer, loop = best["upload_many"], best["rclone"], best["upload loop"]
    return [
        ratio_row(f"upload_many {what}", files_per_second(count, many),
                  f"{files_per_second(count, peer)} rclone copy", peer / many, Target.at_least(1.0)),
        # Context, no target: what overlapping the uploads buys (met is always "yes").
        Row(f"upload loop (workers=1) {what}", files_per_second(count, loop),
            f"{count / many:,.0f} files/s upload_many", many / loop, Target("none", lambda _: True),
            ratio=f"{many / loop:.2f}"),
    ]


# -- 2. one large file to three hosts at once ---------------------------------------------


def three_hosts_figure(bench: Bench, sizes: NetworkSizes) -> list[Row]:
    """``upload`` of one large file to a folder, an SFTP and a WebDAV host at once,
    against the slowest of the three alone."""
    size = sizes.big_mib * MIB
    source = bench.root / "three-hosts.bin"
    note(f"  writing a {sizes.big_mib} MiB random file")
    write_random_file(source, size)
    digests: set[str] = set()
    user, password = "bench", secrets.token_urlsafe(12)
    with ExitStack() as stack:
        sshd_folder = stack.enter_context(fresh_dir(bench.root, "sshd"))
        sshd = stack.enter_context(running_sshd(sshd_folder))
        dav_root = stack.enter_context(fresh_dir(bench.root, "webdav"))
        dav = stack.enter_context(running_webdav(dav_root, user, password))
        sftp_remotes, dav_remotes = Remotes(sshd.root), Remotes(dav_root)

        def trial(kinds: Sequence[str]) -> Callable[[], float]:
            def run() -> float:
                """A fresh node with these hosts, opened before the clock; inside it, ``upload``
                (hash, cache copy and fsync, sending to every host, connecting included)."""
                with fresh_dir(bench.root, "three-node") as folder:
                    stores = {"folder": folder / "host", "sftp": sftp_remotes.fresh("big"),
                              "webdav": dav_remotes.fresh("big")}
                    urls = {"folder": host_url(folder), "sftp": sftp_url(sshd, stores["sftp"]),
                            "webdav": webdav_url(dav, stores["webdav"].name)}
                    with open_node(folder, 2 * size, [urls[kind] for kind in kinds]) as cm, \
                            Stopwatch() as clock:
                        digest = cm.upload(source)
                    if not isinstance(digest, str):
                        raise RuntimeError(f"upload to {'+'.join(kinds)} kept the file nowhere")
                    digests.add(digest)
                    for kind in kinds:
                        _expect(stored_objects(stores[kind]), {digest: size},
                                f"the object on the {kind} host")
                    for kind in ("sftp", "webdav"):
                        shutil.rmtree(stores[kind], ignore_errors=True)
                os.sync()
                return clock.elapsed

            return run

        solos = ("folder", "sftp", "webdav")
        best = best_of(sizes.big_rounds, {"three": trial(solos), **{kind: trial([kind]) for kind in solos}})
    source.unlink()
    _expect(len(digests), 1, "every upload found one and the same SHA-256")
    slowest = max(solos, key=lambda kind: best[kind])
    rate = f"{size / MIB / best['three']:.0f} MiB/s"
    return [ratio_row(f"upload {sizes.big_mib} MiB, folder+SFTP+WebDAV at once",
                      f"{seconds(best['three'])} ({rate})",
                      f"{seconds(best[slowest])} {slowest} alone", best["three"] / best[slowest],
                      Target.at_most(1.3))]


FIGURES: dict[str, NetworkFigure] = {
    "sftp-many": sftp_many_figure,
    "three-hosts": three_hosts_figure,
}


def figures(quick: bool) -> dict[str, Callable[[Bench], list[Row]]]:
    """The network figures by name, each bound to the sizes of a quick or a full run."""
    sizes = QUICK if quick else FULL

    def bound(figure: NetworkFigure) -> Callable[[Bench], list[Row]]:
        return lambda bench: figure(bench, sizes)

    return {name: bound(figure) for name, figure in FIGURES.items()}
