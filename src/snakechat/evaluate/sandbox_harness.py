"""The harness that runs inside the sandbox: a program's tests, with the program in another process.

Started by `snakechat.evaluate.humaneval_sandbox` as

    python -I -S -u sandbox_harness.py --token-fd N --result-fd M --cpu S --memory B --file-size B
        --open-files N --nproc P [--drop-to UID]

with the job as JSON on stdin: {"program": model-written code, "tests": code defining check(candidate),
"entry_point": name}. It uses the standard library only (the sandbox has nothing else).

Two processes, so that no model-written code ever runs where the verdict is made:
- the candidate process is forked first, before the token is read, closes every descriptor but its
  two pipes, runs the program and then only answers calls: a function name and plain arguments in, a
  plain value (None, bool, int, float, complex, str, bytes and lists, tuples, dicts, sets and
  frozensets of them, exact types only) or an exception's type and message out;
- the test process (this one) runs the tests with each function of the program replaced by a proxy
  that calls the candidate process (none under a builtin's name: the tests' `abs` is the builtin), so a returned object cannot equal everything, and exits, exit
  hooks or tracing in the candidate only end or disturb the candidate. Only after check() returns does
  it read the per-run token from --token-fd and write `passed <token>` to --result-fd. It is made
  non-dumpable first, so the candidate (same user) can neither ptrace it nor read its memory or take
  its descriptors (process_vm_readv, pidfd_getfd).
"""

import builtins
import ctypes
import importlib
import json
import os
import resource
import struct
import sys
import time
import types

MAX_MESSAGE = 16 << 20  # bytes of one message between the two processes
MAX_DEPTH = 64  # nesting of a value
MAX_JOB = 8 << 20  # bytes of the job on stdin
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SEQUENCES = {list: "l", tuple: "t", set: "S", frozenset: "F"}
FROM_TAG = {tag: kind for kind, tag in SEQUENCES.items()}


class NotPlain(TypeError):
    """A value that cannot cross between the processes: only plain data does."""


def encode(value, depth=0):
    """A plain value as JSON-able data; anything else (a subclass too) raises NotPlain."""
    if depth > MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"i": format(value, "x")}  # hex: no limit on digits, exact
    if kind is float:
        return {"f": value.hex()}
    if kind is complex:
        return {"c": [value.real.hex(), value.imag.hex()]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind in SEQUENCES:
        return {SEQUENCES[kind]: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise NotPlain(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def decode(data, depth=0):
    """The value `encode` gave; raises ValueError on anything it could not have given."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if data is None or type(data) is bool or type(data) is str:
        return data
    if type(data) is not dict or len(data) != 1:
        raise ValueError("malformed value")
    [(tag, payload)] = data.items()
    if tag == "i" and type(payload) is str:
        return int(payload, 16)
    if tag == "f" and type(payload) is str:
        return float.fromhex(payload)
    if tag == "c" and type(payload) is list and len(payload) == 2 and all(type(p) is str for p in payload):
        return complex(float.fromhex(payload[0]), float.fromhex(payload[1]))
    if tag == "b" and type(payload) is str:
        return bytes.fromhex(payload)
    if tag in FROM_TAG and type(payload) is list:
        return FROM_TAG[tag](decode(v, depth + 1) for v in payload)
    if tag == "d" and type(payload) is list and all(type(p) is list and len(p) == 2 for p in payload):
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in payload}
    raise ValueError("malformed value")


class Channel:
    """Length-prefixed JSON messages over a pair of pipes."""

    def __init__(self, read_fd, write_fd):
        self.read_fd, self.write_fd = read_fd, write_fd

    def send(self, message):
        data = json.dumps(message).encode()
        if len(data) > MAX_MESSAGE:
            raise NotPlain(f"message of {len(data)} bytes is over the {MAX_MESSAGE} byte limit")
        view = memoryview(struct.pack("!I", len(data)) + data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def _exactly(self, n):
        chunks = []
        while n:
            chunk = os.read(self.read_fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self):
        os.close(self.read_fd)
        os.close(self.write_fd)

    def recv(self):
        (size,) = struct.unpack("!I", self._exactly(4))
        if size > MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes is over the {MAX_MESSAGE} byte limit")
        return json.loads(self._exactly(size))


# --- the candidate process -----------------------------------------------------------------------


def describe(namespace):
    """What the test process may use of the program's globals: functions (as proxies), modules, plain values."""
    names = {}
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names[name] = {"module": value.__name__}
        elif callable(value):
            names[name] = {"function": True}
        else:
            try:
                names[name] = {"value": encode(value)}
            except NotPlain:
                pass
    return names


def candidate_main(channel, program):
    """Run the program, then answer calls until the test process hangs up. Never returns."""
    keep = sorted((channel.read_fd, channel.write_fd))
    os.closerange(3, keep[0])
    os.closerange(keep[0] + 1, keep[1])
    os.closerange(keep[1] + 1, 1 << 16)
    namespace = {"__name__": "candidate", "__builtins__": builtins}
    try:
        exec(compile(program, "<candidate>", "exec"), namespace)
        channel.send({"ready": describe(namespace)})
        while True:
            request = channel.recv()
            try:
                args = [decode(a) for a in request["args"]]
                result = namespace[request["call"]](*args)
                reply = {"value": encode(result)}
            except BaseException as e:  # noqa: BLE001 - every failure of the call goes back as the call's outcome
                reply = {"raised": type(e).__name__, "message": str(e)[:500]}
            channel.send(reply)
    except BaseException as e:  # noqa: BLE001
        try:
            channel.send({"raised": type(e).__name__, "message": str(e)[:500]})
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


# --- the test process ----------------------------------------------------------------------------


class CandidateGone(RuntimeError):
    """The candidate process ended (or broke the protocol) before the tests were done."""


def raised(reply):
    """The exception a call raised in the candidate, as a builtin exception type where the name is one."""
    name, message = str(reply.get("raised")), str(reply.get("message"))
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return RuntimeError(f"{name}: {message}")


class Candidate:
    def __init__(self, channel):
        self.channel = channel

    def call(self, name, args):
        try:
            self.channel.send({"call": name, "args": [encode(a) for a in args]})
            reply = self.channel.recv()
        except (EOFError, OSError) as e:
            raise CandidateGone(f"the program's process ended during a call to {name}()") from e
        if type(reply) is not dict:
            raise CandidateGone("the program's process broke the protocol")
        if "value" in reply:
            return decode(reply["value"])
        raise raised(reply)

    def proxy(self, name):
        def call(*args):
            return self.call(name, args)

        call.__name__ = call.__qualname__ = name
        return call


def test_namespace(candidate, ready):
    """Globals for the tests: the program's functions as proxies, its modules imported here, its plain
    values, as HumanEval's protocol (prompt, completion and tests in one module) gives them; but never
    under a builtin's name, which the tests mean as the builtin (a program's own `abs` or `all` that
    answers what the tests want would fake a pass). check() gets the entry point as its argument."""
    namespace = {"__name__": "tests", "__builtins__": builtins}
    for name, entry in ready.items():
        if type(entry) is not dict or name in vars(builtins):
            continue
        if "function" in entry:
            namespace[name] = candidate.proxy(name)
        elif "module" in entry and str(entry["module"]).partition(".")[0] in sys.stdlib_module_names:
            namespace[name] = importlib.import_module(entry["module"])
        elif "value" in entry:
            namespace[name] = decode(entry["value"])
    return namespace


def run_tests(channel, job):
    """Raise unless check(entry_point) returns."""
    try:
        ready = channel.recv()
    except (EOFError, OSError) as e:
        raise CandidateGone("the program's process ended before the tests started") from e
    if type(ready) is not dict or type(ready.get("ready")) is not dict:
        raise raised(ready) if type(ready) is dict else CandidateGone("the program's process broke the protocol")
    entry = job["entry_point"]
    if entry not in ready["ready"] or "function" not in ready["ready"][entry]:
        raise NameError(f"the program defines no function {entry}()")
    candidate = Candidate(channel)
    namespace = test_namespace(candidate, ready["ready"])
    exec(compile(job["tests"], "<tests>", "exec"), namespace)
    namespace["check"](candidate.proxy(entry))


def prctl(option, value):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


OPTIONS = ("token-fd", "result-fd", "cpu", "memory", "file-size", "open-files", "nproc", "drop-to")


def parse_args(argv):
    """--name N pairs into {name: N} (argparse would cost this short-lived process a third of its start)."""
    if len(argv) % 2 or not all(a.startswith("--") and a[2:] in OPTIONS for a in argv[::2]):
        raise SystemExit(f"harness: usage: {' '.join(f'--{o} N' for o in OPTIONS)} (--drop-to optional)")
    args = {a[2:]: int(v) for a, v in zip(argv[::2], argv[1::2])}
    missing = [o for o in OPTIONS[:-1] if o not in args]
    if missing:
        raise SystemExit(f"harness: missing --{', --'.join(missing)}")
    return args


def confine(args):
    """Drop root (where the sandbox starts as root), become non-dumpable, set the resource limits."""
    uid = args.get("drop-to")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("harness: could not drop root")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 0)
    limits = [(resource.RLIMIT_CPU, args["cpu"]), (resource.RLIMIT_AS, args["memory"]), (resource.RLIMIT_FSIZE, args["file-size"]),
              (resource.RLIMIT_NOFILE, args["open-files"]), (resource.RLIMIT_CORE, 0)]
    if args["nproc"]:
        limits.append((resource.RLIMIT_NPROC, args["nproc"]))
    for limit, value in limits:
        resource.setrlimit(limit, (value, value))


def read_job():
    data = sys.stdin.buffer.read(MAX_JOB + 1)
    if len(data) > MAX_JOB:
        raise SystemExit("harness: job too large")
    job = json.loads(data)
    if not all(type(job.get(k)) is str for k in ("program", "tests", "entry_point")):
        raise SystemExit("harness: job needs program, tests and entry_point")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return job


def fork_within_budget(patience_s=1.0):
    """os.fork(), retried for a moment where the process limit refuses it: the run's uid is its own,
    but the processes of the run that held it before may still be in the kernel's count while they
    are reaped. A refusal after that is reported as the sandbox's error, not the program's failure."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return os.fork()
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def main():
    args = parse_args(sys.argv[1:])
    confine(args)
    job = read_job()
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    try:
        pid = fork_within_budget()
    except OSError as e:
        os.write(args["result-fd"], f"error the harness could not start the program's process: {e}".encode())
        os._exit(0)
    if pid == 0:
        os.close(requests_w)
        os.close(replies_r)
        candidate_main(Channel(requests_r, replies_w), job["program"])
    os.close(requests_r)
    os.close(replies_w)
    channel = Channel(replies_r, requests_w)
    try:
        run_tests(channel, job)
    except BaseException as e:  # noqa: BLE001 - any way the tests end but returning is a failure
        verdict = f"failed {type(e).__name__}: {e}"[:2000].encode("utf-8", "replace")
    else:
        token = os.read(args["token-fd"], 256)  # only now: check() has returned
        verdict = b"passed " + token
    os.write(args["result-fd"], verdict)
    os.close(args["result-fd"])
    channel.close()
    os._exit(0)


if __name__ == "__main__":
    main()
