"""snakechat.data.download against a real HTTP server on 127.0.0.1: resume, retry, verify, atomic rename."""

import email.utils
import hashlib
import json
import os
import re
import socket
import time

import pytest
from http_server import http_server  # noqa: F401  (fixture)

from snakechat.data.download import DownloadError, fetch, part_path, record_path

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
    assert leftovers(dest.parent) == [".blob.bin.download.json", "blob.bin"]
    assert json.loads(record_path(dest).read_text()) == info  # the record a later reuse is checked against


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
    with pytest.raises(DownloadError, match=f"{url}: the server announces {len(PAYLOAD)} bytes, over the limit of 5"):
        fetch(url, tmp_path / "b.bin", size=5, backoff=0, log=quiet)
    with pytest.raises(DownloadError, match=f"{url}: expected {len(PAYLOAD) + 1} bytes, got {len(PAYLOAD)}"):
        fetch(url, tmp_path / "c.bin", size=len(PAYLOAD) + 1, backoff=0, log=quiet)
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


def flip_one_byte(path, at=None):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    path.write_bytes(data)


def test_a_cached_file_is_reused_only_while_it_matches_its_record(http_server, tmp_path):
    url = serve(http_server)
    dest = tmp_path / "blob.bin"
    fetch(url, dest, sha256=DIGEST, backoff=0, log=quiet)
    http_server.requests.clear()
    messages = []
    assert fetch(url, dest, sha256=DIGEST, backoff=0, log=messages.append)["sha256"] == DIGEST
    assert http_server.requests == [] and f"{dest}: already here" in messages[0]

    rejected = {
        "a flipped byte": (lambda: flip_one_byte(dest), f"{dest}: cached file rejected: sha256 "),
        "a truncation": (lambda: dest.write_bytes(PAYLOAD[:-1]), f"{dest}: cached file rejected: {len(PAYLOAD) - 1} bytes, but {len(PAYLOAD)} expected"),
        "no record": (lambda: record_path(dest).unlink(), f"{dest}: cached file rejected: no record of its download"),
    }
    for spoil, expected in rejected.values():
        spoil()
        messages.clear()
        http_server.requests.clear()
        assert fetch(url, dest, backoff=0, log=messages.append)["sha256"] == DIGEST
        assert messages[0].startswith(expected), messages
        assert [r[0] for r in http_server.requests] == ["blob.bin"]  # fetched again, once
        assert dest.read_bytes() == PAYLOAD

    other = serve(http_server, "other.bin", PAYLOAD[::-1])
    messages.clear()
    fetch(other, dest, backoff=0, log=messages.append)
    assert f"it was fetched from {url}, not {other}" in messages[0] and dest.read_bytes() == PAYLOAD[::-1]
    messages.clear()
    with pytest.raises(DownloadError, match="sha256 mismatch"):  # configured sha256: the cached file is not it, nor is the served one
        fetch(other, dest, sha256=DIGEST, backoff=0, log=messages.append)
    assert "is not the expected" in messages[0] and not dest.exists()


@pytest.mark.parametrize("when", ["seconds", "http-date"])
def test_a_long_retry_after_is_capped(http_server, tmp_path, when):
    url = serve(http_server)
    http_server.mode = "busy"
    http_server.retry_after = "3600" if when == "seconds" else email.utils.formatdate(time.time() + 3600, usegmt=True)
    messages = []
    start = time.monotonic()
    fetch(url, tmp_path / "blob.bin", sha256=DIGEST, backoff=0, max_retry_wait=0.2, log=messages.append)
    assert time.monotonic() - start < 30
    assert any(re.search(r"the server asked for 3[56]\d\d s; waiting the maximum of 0.2 s instead", m) for m in messages), messages
    assert len(http_server.requests) == 2


def test_a_body_without_content_length_is_still_capped(http_server, tmp_path):
    url = serve(http_server)
    http_server.mode = "nolength"
    with pytest.raises(DownloadError, match=rf"{url}: more than 100000 bytes \(no Content-Length\); stopped reading"):
        fetch(url, tmp_path / "blob.bin", max_bytes=100_000, backoff=0, log=quiet)
    with pytest.raises(DownloadError, match=rf"{url}: more than 1000 bytes \(no Content-Length\)"):
        fetch(url, tmp_path / "blob.bin", size=1000, backoff=0, log=quiet)  # the expected size bounds it too
    assert leftovers(tmp_path) == ["www"]
    fetch(url, tmp_path / "blob.bin", max_bytes=len(PAYLOAD), sha256=DIGEST, backoff=0, log=quiet)  # exactly the limit is fine
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_an_announced_body_over_the_limit_is_refused_unread(http_server, tmp_path):
    url = serve(http_server)
    with pytest.raises(DownloadError, match=f"{url}: the server announces {len(PAYLOAD)} bytes, over the limit of 1000"):
        fetch(url, tmp_path / "blob.bin", max_bytes=1000, retries=3, backoff=0, log=quiet)
    assert len(http_server.requests) == 1 and leftovers(tmp_path) == ["www"]


SMALL = os.urandom(2000)


def test_a_trickling_body_is_dropped_under_the_minimum_rate(http_server, tmp_path):
    url = serve(http_server, data=SMALL)
    http_server.mode = "trickle"  # 20 bytes/s, each byte well inside the read timeout
    messages = []
    start = time.monotonic()
    with pytest.raises(DownloadError, match=rf"{url}: giving up after 2 attempts: \d+ bytes/s over the last 0\.\d s, under min_rate 1000"):
        fetch(url, tmp_path / "blob.bin", timeout=0.5, min_rate=1000, retries=1, backoff=0, log=messages.append)
    assert time.monotonic() - start < 5
    assert http_server.requests[1][1] is not None  # the retry resumed what had come
    assert leftovers(tmp_path) == [".blob.bin.part", "www"]


@pytest.mark.parametrize("mode", ["trickle", "slowhead"])
def test_a_trickling_server_cannot_hold_a_download_past_its_deadline(http_server, tmp_path, mode):
    url = serve(http_server, data=SMALL)
    http_server.mode = mode  # no minimum rate, a read timeout each byte arrives within: only the deadline ends it
    start = time.monotonic()
    with pytest.raises(DownloadError, match=rf"{url}: no complete file within the deadline of 1.5 s \(\d+ bytes after 1 attempts"):
        fetch(url, tmp_path / "blob.bin", timeout=5, min_rate=0, deadline=1.5, backoff=0, log=quiet)
    took = time.monotonic() - start
    assert 1.5 <= took < 4, took
    assert not (tmp_path / "blob.bin").exists()


def test_a_slow_but_steady_server_is_not_dropped(http_server, tmp_path):
    data = SMALL[:60]
    url = serve(http_server, data=data)
    http_server.mode, http_server.trickle_s = "trickle", 0.005  # ~200 bytes/s
    fetch(url, tmp_path / "blob.bin", timeout=0.1, min_rate=20, deadline=30, size=len(data), backoff=0, log=quiet)
    assert (tmp_path / "blob.bin").read_bytes() == data
