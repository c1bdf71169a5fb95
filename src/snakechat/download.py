"""Fetch one file over HTTP(S): retries, resume, verification, and an atomic rename at the end.

The bytes go to a hidden `.<name>.part` file beside the destination. A dropped connection is
retried with a `Range` request that continues where the part file ends (or from scratch when the
server ignores ranges). Only a file that passes every check (size, sha256, and the caller's own
`verify`) is renamed onto the destination, so a file at the final name is always a good one;
a bad one is deleted and the error names the URL.

Library code: the stages that download (`snakechat.dataset`, `snakechat.eval_bundle`,
`snakechat.chat_data`) call `fetch`.
"""

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from snakechat.provenance import hash_file

USER_AGENT = "snakechat-download/1"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed for good: retries used up, or the file is not what it should be."""


class _Retryable(Exception):
    """A failure worth another attempt (network trouble, a short read, a server error)."""

    def __init__(self, message, wait=0.0):
        super().__init__(message)
        self.wait = wait  # seconds the server asked us to wait (Retry-After)


def _retry_after(headers):
    try:
        return max(0.0, float(headers.get("Retry-After", 0)))
    except (TypeError, ValueError):  # an HTTP date: fall back to our own backoff
        return 0.0


def part_path(dest):
    dest = Path(dest)
    return dest.parent / f".{dest.name}.part"


def add_http_arguments(parser, workers=True):
    """The download settings every http source takes (the config's retries, timeout, backoff, workers)."""
    parser.add_argument("--retries", type=int, default=5, help="http: extra attempts after a transient failure")
    parser.add_argument("--timeout", type=float, default=60.0, help="http: seconds a connection may stall")
    parser.add_argument("--backoff", type=float, default=2.0, help="http: seconds before the first retry, doubled each time")
    if workers:
        parser.add_argument("--workers", type=int, default=4, help="http: parallel downloads")


def _transfer(url, part, timeout):
    """One attempt: append the rest of `url` to `part`. Raises _Retryable on transient trouble."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our part file is no prefix of what the server has now
            part.unlink()
            raise _Retryable("HTTP 416 for a resumed range; starting over") from e
        if e.code in (408, 429) or e.code >= 500:
            raise _Retryable(f"HTTP {e.code} {e.reason}", wait=_retry_after(e.headers)) from e
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from e
    with response:
        if have and response.status == 206:
            mode, start = "ab", have
        else:  # a fresh download, or a server that ignored the range: start over
            mode, start = "wb", 0
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        written = start
        try:
            with open(part, mode) as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    written += len(block)
        except (OSError, http.client.HTTPException, socket.timeout) as e:
            raise _Retryable(f"connection lost after {written} bytes: {type(e).__name__}: {e}") from e
    if expected is not None and written != expected:
        raise _Retryable(f"connection lost after {written} of {expected} bytes")


def _check(url, part, size, sha256, verify):
    """Raise DownloadError naming the URL if the finished part file is not the file we want."""
    got = part.stat().st_size
    if size is not None and got != size:
        raise DownloadError(f"{url}: expected {size} bytes, got {got}")
    digest = hash_file(part)
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"{url}: sha256 mismatch (expected {sha256}, got {digest})")
    if verify is not None:
        try:
            verify(part)
        except Exception as e:
            raise DownloadError(f"{url}: downloaded file is corrupt or in the wrong format: {e}") from e
    return {"url": url, "bytes": got, "sha256": digest}


def fetch(url, dest, *, retries=5, timeout=60.0, backoff=1.0, size=None, sha256=None, verify=None, log=print):
    """Download `url` to `dest`; return {"url", "bytes", "sha256"}.

    retries: extra attempts after transient failures (each resumes the part file);
    timeout: seconds a connect or read may stall; backoff: first wait between attempts, doubled
    each time (longer if the server sends Retry-After); size / sha256: expected values where known; verify(path): raises if the content
    is unusable (e.g. not a parquet file). A download that fails verification is deleted; if it
    had been resumed it is fetched once more from scratch, else the error is raised at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    attempt, fresh_retry_used = 0, False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(url, part, timeout)
        except _Retryable as e:
            if attempt >= retries:
                raise DownloadError(f"{url}: giving up after {attempt + 1} attempts: {e}") from e
            wait = max(backoff * 2**attempt, e.wait)
            log(f"{url}: {e}; retrying in {wait:.1f}s ({attempt + 1}/{retries})")
            time.sleep(wait)
            attempt += 1
            continue
        try:
            info = _check(url, part, size, sha256, verify)
        except DownloadError:
            part.unlink(missing_ok=True)
            if resumed and not fresh_retry_used:
                log(f"{url}: resumed download failed verification; fetching it again from scratch")
                fresh_retry_used = True
                continue
            raise
        os.replace(part, dest)
        return info
