"""snakechat.download against a real HTTP server on 127.0.0.1: resume, retry, verify, atomic rename."""

import hashlib
import os
import socket

import pytest
from http_server import http_server  # noqa: F401  (fixture)

from snakechat.download import DownloadError, fetch, part_path

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def quiet(*args):
    pass


def serve(server, name="blob.bin", data=PAYLOAD):
    (server.root / name).write_bytes(data)
    return server.url(name)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_plain_download(http_server, tmp_path):
    url = serve(http_server)
    dest = tmp_path / "out" / "blob.bin"
    info = fetch(url, dest, sha256=DIGEST, size=len(PAYLOAD), backoff=0, log=quiet)
    assert dest.read_bytes() == PAYLOAD
    assert info == {"url": url, "bytes": len(PAYLOAD), "sha256": DIGEST}
    assert leftovers(dest.parent) == ["blob.bin"]


def test_dropped_connection_resumes_with_range(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "drop"
    dest = tmp_path / "blob.bin"
    fetch(url, dest, sha256=DIGEST, backoff=0, log=quiet)
    assert dest.read_bytes() == PAYLOAD
    assert len(http_server.requests) == 2
    assert http_server.requests[0][1] is None
    assert http_server.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_interrupted_download_keeps_its_part_and_a_later_call_finishes_it(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "drop"
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="giving up after 1 attempts"):
        fetch(url, dest, retries=0, backoff=0, log=quiet)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == len(PAYLOAD) // 2
    fetch(url, dest, retries=0, sha256=DIGEST, backoff=0, log=quiet)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests[-1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_that_ignores_range_restarts_from_scratch(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "norange"
    dest = tmp_path / "blob.bin"
    part_path(dest).write_bytes(b"stale bytes from another file")
    fetch(url, dest, sha256=DIGEST, backoff=0, log=quiet)
    assert dest.read_bytes() == PAYLOAD


def test_corrupt_file_fails_verification_naming_the_url_and_leaves_nothing(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "corrupt"
    dest = tmp_path / "blob.bin"

    def verify(path):
        if path.read_bytes() != PAYLOAD:
            raise ValueError("content differs")

    with pytest.raises(DownloadError, match=f"{url}.*corrupt.*content differs"):
        fetch(url, dest, verify=verify, backoff=0, log=quiet)
    assert leftovers(tmp_path) == ["www"]


def test_sha256_and_size_mismatch_are_errors(http_server, tmp_path):
    url = serve(http_server)
    with pytest.raises(DownloadError, match=f"{url}: sha256 mismatch"):
        fetch(url, tmp_path / "a.bin", sha256="0" * 64, backoff=0, log=quiet)
    with pytest.raises(DownloadError, match=f"{url}: expected 5 bytes, got {len(PAYLOAD)}"):
        fetch(url, tmp_path / "b.bin", size=5, backoff=0, log=quiet)
    assert leftovers(tmp_path) == ["www"]


def test_missing_file_is_not_retried(http_server, tmp_path):
    url = http_server.url("nope.bin")
    with pytest.raises(DownloadError, match=f"{url}: HTTP 404"):
        fetch(url, tmp_path / "nope.bin", retries=3, backoff=0, log=quiet)
    assert len(http_server.requests) == 1


def test_unreachable_server_gives_up_after_the_retries(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    messages = []
    with pytest.raises(DownloadError, match=f"{url}: giving up after 3 attempts"):
        fetch(url, tmp_path / "x.bin", retries=2, timeout=2, backoff=0, log=messages.append)
    assert len(messages) == 2


def test_server_error_is_retried(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "busy"
    messages = []
    fetch(url, tmp_path / "blob.bin", sha256=DIGEST, backoff=0, log=messages.append)
    assert len(http_server.requests) == 2 and "HTTP 503" in messages[0]
