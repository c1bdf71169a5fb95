"""Fetch one file over HTTP(S): retries, resume, verification, and an atomic rename at the end.

The bytes go to a hidden `.<name>.part` file beside the destination. A dropped connection is
retried with a `Range` request that continues where the part file ends (or from scratch when the
server ignores ranges). Only a file that passes every check (size, sha256, and the caller's own
`verify`) is renamed onto the destination; a bad one is deleted and the error names the URL.

Each verified file gets a record beside it, `.<name>.download.json` (URL, bytes, sha256), written
before the rename. A file already at the destination is reused only if it still matches its
record and the expected size and sha256, checked by reading it again; one that does not (a flipped
byte, a truncation, no record at all) is named, deleted and fetched again. (The stages' own
manifests cannot serve here: Snakemake deletes a job's outputs before it runs it again.)

Bounds a server cannot push: a `Retry-After` longer than `max_retry_wait` is cut to it, a body
is read up to the expected size or `max_bytes`, whether or not the server sent a Content-Length,
a transfer that averages under `min_rate` bytes/s over a `timeout` window is dropped (and resumed,
as a retry), and the whole fetch, retries and waits included, ends at `deadline` seconds: at that
moment a watchdog shuts the connection's socket, so a server that trickles its headers or body a
byte at a time cannot hold it longer.

Library code: the stages that download (`snakechat.dataset`, `snakechat.eval_bundle`,
`snakechat.chat_data`) call `fetch`.
"""

import email.utils
import http.client
import json
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from snakechat.runtime.provenance import hash_file
from snakechat.runtime.settings import finite_float

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
    """Seconds a Retry-After header asks for (a number or an HTTP date); 0 when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return 0.0


def part_path(dest):
    dest = Path(dest)
    return dest.parent / f".{dest.name}.part"


def record_path(dest):
    """Where the record of a verified download (URL, bytes, sha256) is kept."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.download.json"


def _write_record(dest, info):
    path = record_path(dest)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def _read_record(dest):
    try:
        record = json.loads(record_path(dest).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"url", "bytes", "sha256"} <= set(record) else None


def _print(message):
    print(message, flush=True)


def cached(url, dest, *, size=None, sha256=None, log=_print):
    """{"url", "bytes", "sha256"} of the file at `dest` if it is the one fetched from `url` and still
    matches its record and the expected size and sha256; else None, after naming the file and why
    and deleting it (and its record)."""
    dest = Path(dest)
    if not dest.exists():
        return None
    record, got = _read_record(dest), dest.stat().st_size
    digest = problem = None
    if record is None:
        problem = f"no record of its download ({record_path(dest).name})"
    elif record["url"] != url:
        problem = f"it was fetched from {record['url']}, not {url}"
    elif got != record["bytes"] or (size is not None and got != size):
        problem = f"{got} bytes, but {record['bytes'] if got != record['bytes'] else size} expected"
    else:
        digest = hash_file(dest)
        if digest != record["sha256"]:
            problem = f"sha256 {digest} is not the {record['sha256']} it was downloaded with"
        elif sha256 is not None and digest != sha256.lower():
            problem = f"sha256 {digest} is not the expected {sha256}"
    if problem is not None:
        log(f"{dest}: cached file rejected: {problem}; fetching it again")
        dest.unlink()
        record_path(dest).unlink(missing_ok=True)
        return None
    log(f"{dest}: already here ({got} bytes, sha256 matches its download record)")
    return {"url": url, "bytes": got, "sha256": digest}


MAX_RETRY_WAIT = 120.0
MAX_BYTES = 4 << 30
DEADLINE = 6 * 3600.0  # seconds for one file, retries included
MIN_RATE = 1024.0  # bytes per second, averaged over each `timeout` window
HTTP_SETTINGS = ("retries", "timeout", "backoff", "max_retry_wait", "max_bytes", "deadline", "min_rate")  # fetch's keywords, set by add_http_arguments


def http_settings(args):
    """fetch's keywords from the parsed flags of `add_http_arguments`."""
    return {k: getattr(args, k) for k in HTTP_SETTINGS}


def add_http_arguments(parser, workers=True):
    """The download settings every http source takes (the config's retries, timeout, backoff, max_retry_wait, max_bytes, workers)."""
    parser.add_argument("--retries", type=int, default=5, help="http: extra attempts after a transient failure")
    parser.add_argument("--timeout", type=finite_float, default=60.0, help="http: seconds a connection may stall")
    parser.add_argument("--backoff", type=finite_float, default=2.0, help="http: seconds before the first retry, doubled each time")
    parser.add_argument("--max-retry-wait", type=finite_float, default=MAX_RETRY_WAIT, help="http: most seconds to wait before a retry, whatever Retry-After says")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="http: most bytes of one file (where its size is not given)")
    parser.add_argument("--deadline", type=finite_float, default=DEADLINE, help="http: most seconds for one file, retries and waits included")
    parser.add_argument("--min-rate", type=finite_float, default=MIN_RATE, help="http: least bytes/s a transfer must average over each --timeout window (0: no minimum)")
    if workers:
        parser.add_argument("--workers", type=int, default=4, help="http: parallel downloads")


class _Watchdog:
    """Shuts every socket the fetch opened once its deadline passes, from a timer thread: a blocked
    read (of headers or body) then returns, however slowly the server trickles."""

    def __init__(self, seconds):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.sockets, self.fired, self._lock = [], False, threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock):
        with self._lock:
            self.sockets.append(sock)
            if self.fired:
                self._shut(sock)

    @staticmethod
    def _shut(sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fire(self):
        with self._lock:
            self.fired = True
            for sock in self.sockets:
                self._shut(sock)

    def left(self):
        return self.deadline - time.monotonic()

    def cancel(self):
        self._timer.cancel()


def _opener(watchdog):
    """A urllib opener whose connections (redirects' too) register their sockets with `watchdog`."""
    def watched(base):
        class Connection(base):
            def connect(self):
                super().connect()
                watchdog.watch(self.sock)
        return Connection

    http_conn, https_conn = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_conn, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _transfer(url, part, timeout, limit, min_rate=0.0, opener=None):
    """One attempt: append the rest of `url` to `part`, at most `limit` bytes in all. Raises _Retryable
    on transient trouble (a transfer under `min_rate` bytes/s over a `timeout` window too),
    DownloadError for a body over the limit."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = (opener or urllib.request.build_opener()).open(request, timeout=timeout)
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
        expected = start + int(length) if length is not None and length.isdigit() else None
        if expected is not None and expected > limit:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server announces {expected} bytes, over the limit of {limit}")
        written = start
        window_start, window_bytes = time.monotonic(), written
        try:
            with open(part, mode) as f:
                # read1: what has arrived, so that the rate is seen between the server's bytes
                while written <= limit and (block := response.read1(min(CHUNK, limit + 1 - written))):
                    f.write(block)
                    written += len(block)
                    if (now := time.monotonic()) - window_start >= timeout:
                        rate = (written - window_bytes) / (now - window_start)
                        if rate < min_rate:
                            raise _Retryable(f"{rate:.0f} bytes/s over the last {now - window_start:.1f} s, under min_rate {min_rate:g} "
                                             f"(after {written} bytes)")
                        window_start, window_bytes = now, written
        except (OSError, http.client.HTTPException, socket.timeout) as e:
            raise _Retryable(f"connection lost after {written} bytes: {type(e).__name__}: {e}") from e
    if written > limit:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: more than {limit} bytes{'' if length else ' (no Content-Length)'}; stopped reading")
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


def fetch(url, dest, *, retries=5, timeout=60.0, backoff=1.0, max_retry_wait=MAX_RETRY_WAIT, max_bytes=MAX_BYTES,
          deadline=DEADLINE, min_rate=MIN_RATE, size=None, sha256=None, verify=None, log=_print):
    """Download `url` to `dest` (or reuse the file there, see `cached`); return {"url", "bytes", "sha256"}.

    retries: extra attempts after transient failures (each resumes the part file);
    timeout: seconds a connect or read may stall; backoff: first wait between attempts, doubled
    each time (longer if the server sends Retry-After), never more than max_retry_wait;
    max_bytes: the most a body may have where `size` is not given; deadline: seconds for the whole
    fetch; min_rate: least bytes/s over each `timeout` window; size / sha256: expected values
    where known; verify(path): raises if the content is unusable (e.g. not a parquet file). A
    download that fails verification is deleted; if it had been resumed it is fetched once more
    from scratch, else the error is raised at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (info := cached(url, dest, size=size, sha256=sha256, log=log)) is not None:
        return info
    part = part_path(dest)
    watchdog = _Watchdog(deadline)
    try:
        return _fetch_until(watchdog, url, dest, part, retries, timeout, backoff, max_retry_wait, max_bytes, min_rate, size, sha256, verify, log)
    finally:
        watchdog.cancel()


def _fetch_until(watchdog, url, dest, part, retries, timeout, backoff, max_retry_wait, max_bytes, min_rate, size, sha256, verify, log):
    """fetch's attempts, ended by `watchdog`'s deadline."""
    opener = _opener(watchdog)
    attempt, fresh_retry_used = 0, False

    def past_deadline(e):
        have = part.stat().st_size if part.exists() else 0
        return DownloadError(f"{url}: no complete file within the deadline of {watchdog.deadline - watchdog.started:g} s "
                             f"({have} bytes after {attempt + 1} attempts; last: {e})")

    while True:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(url, part, timeout, size if size is not None else max_bytes, min_rate, opener)
            if watchdog.fired:  # the watchdog's shutdown ends a body without Content-Length like a server would
                raise _Retryable("the watchdog closed the connection")
        except _Retryable as e:
            if watchdog.fired or watchdog.left() <= 0:
                raise past_deadline(e) from e
            if attempt >= retries:
                raise DownloadError(f"{url}: giving up after {attempt + 1} attempts: {e}") from e
            wait = max(backoff * 2**attempt, e.wait)
            if wait > max_retry_wait:
                asked = f"the server asked for {e.wait:.0f} s" if e.wait > backoff * 2**attempt else f"backoff reached {wait:.0f} s"
                log(f"{url}: {asked}; waiting the maximum of {max_retry_wait:g} s instead")
                wait = max_retry_wait
            if wait >= watchdog.left():
                raise past_deadline(f"{e}; the next attempt would start after it") from e
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
        _write_record(dest, info)  # before the rename: a file at `dest` without its record is fetched again
        os.replace(part, dest)
        log(f"{dest}: fetched {info['bytes']} bytes from {url}")
        return info
