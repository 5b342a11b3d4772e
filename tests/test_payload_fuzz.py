"""Property tests of data_load: any JSON either loads cleanly or changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmanager import CloudManager, InvalidDump
from cloudmanager.cache import OWNER_FILE
from cloudmanager.names import MAX_NAME_BYTES, is_sha256

EXAMPLES = int(os.environ.get("CM_FUZZ_EXAMPLES", "500"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
hashes = st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                   st.text(max_size=70))
numbers = st.one_of(st.integers(min_value=-5, max_value=2**64), st.text(alphabet="0123456789-", max_size=21),
                    json_values)
names = st.one_of(st.text(max_size=300), st.sampled_from(["..", "../x", "/etc/passwd", "a\x00b", "NUL",
                                                          "C:\\x\\y.txt", " . ", "x" * 300]))
uploads = st.lists(st.fixed_dictionaries({"host_name": st.one_of(st.text(max_size=20), json_values)},
                                         optional={"url": st.one_of(st.text(max_size=40), json_values),
                                                   "error": json_values}), max_size=3)
records = st.fixed_dictionaries(
    {"version": st.sampled_from(["0.1", "0.2", "0.3", 0.2]), "filehash": hashes},
    optional={"filename": names, "filesize": numbers, "datetime": numbers, "uploads": uploads,
              "extra": json_values},
)
documents = st.one_of(st.lists(records, max_size=5), records, json_values)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_json_loads_cleanly_or_changes_nothing(tmp_path: Path, document: object) -> None:
    with CloudManager(tmp_path / "c.sqlite3", tmp_path / "cache", 1000, hosts=["memory://m"]) as cm:
        before = cm.data_dump()
        try:
            cm.data_load(json.dumps(document))
        except InvalidDump:
            assert cm.data_dump() == before
            return
        for record in json.loads(cm.data_dump()):
            assert is_sha256(record["filehash"])
            name = record["filename"]
            assert name and "/" not in name and "\\" not in name and name not in (".", "..")
            assert all(ch.isprintable() for ch in name)
            assert len(name.encode()) <= MAX_NAME_BYTES
        assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name != OWNER_FILE) == []
