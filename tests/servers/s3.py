"""moto's S3 on 127.0.0.1 for the S3 tests, with boto3 kept away from any other address.

moto runs as ``ThreadedMotoServer(ip_address="127.0.0.1", port=0)`` in a child
Python process, not in a thread of the test process: moto keeps objects in
memory and reads whole request bodies, and the conformance suite measures the
test process's allocations (tracemalloc) to prove that a host streams a
64 MiB file; in-process, moto's own copies (over 120 MiB) would be counted
against the host.  The child prints its port, then serves until its standard
input closes, so it also ends when the test process dies.
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
#: The environment of the whole session: dummy keys, and every way boto3 could look
#: for credentials or configuration elsewhere (files, metadata addresses) shut.
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
         "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")

_CHILD = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # serve until the test process closes the pipe (or dies)
server.stop()
"""


@dataclass(frozen=True)
class S3Server:
    """A running moto S3: its endpoint and the region the tests use."""

    endpoint_url: str
    port: int
    region: str = REGION


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1 (session-wide), with the AWS environment of the session set."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with pytest.MonkeyPatch.context() as patch:
        for name in UNSET:
            patch.delenv(name, raising=False)
        for name, value in ENVIRONMENT.items():
            patch.setenv(name, value)
        with open(log, "wb") as errors:
            child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=errors, env=dict(os.environ))
        assert child.stdin is not None and child.stdout is not None
        try:
            ready, _, _ = select.select([child.stdout], [], [], 60)
            line = child.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                raise RuntimeError(f"moto did not start: {log.read_text(errors='replace')[-2000:]}")
            port = int(line)
            yield S3Server(f"http://{LOOPBACK}:{port}", port)
        finally:
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
            child.stdout.close()


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Iterator[S3Client]:
    """A plain boto3 client of the moto server, for setting up and looking at buckets."""
    client = boto3.session.Session().client("s3", endpoint_url=s3_server.endpoint_url,
                                            region_name=s3_server.region)
    yield client
    client.close()


@pytest.fixture
def s3_bucket(s3_client: S3Client) -> Iterator[str]:
    """A new, empty bucket for one test; emptied and removed afterwards."""
    name = f"cm-test-{secrets.token_hex(6)}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)
