"""The README's usage example works as written (paths put in a temporary folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_original_usage_example_runs(tmp_path: Path) -> None:
    (example,) = [b for b in python_blocks() if "cloudmanager.CloudManager(" in b]
    base = tmp_path / "path" / "to"
    base.mkdir(parents=True)
    (base / "file").write_bytes(b"an example file")
    code = example.replace("/path/to/", f"{base}/")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    cm = namespace["cm"]
    assert (base / "database.sqlite3").exists()
    assert cm.catalog._closed  # close() ran


def test_the_quick_start_uploads_on_the_defaults() -> None:
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    first, second = block.group(1).strip().splitlines()
    assert second == "pip install tox && tox"
    install, _, command = first.partition(" && ")
    assert install == "pip install ." and command == "cm upload README.md"
    home = Path.home()  # a fresh one per test (conftest)
    done = subprocess.run([sys.executable, "-m", "cloudmanager", *command.split()[1:]], cwd=ROOT,
                          capture_output=True, text=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f]{64}  README.md  vault: ok\n", done.stdout)
    assert (home / ".local" / "share" / "cloudmanager" / "vault").is_dir()
