"""The HumanEval sandbox tried as an attacker would: each escape fails or is contained.

Every attack is a wrong solution of `add` (it returns a - b) plus a trick, so a pass would be a faked
one. For each: the run does not pass, ends within its limit plus a margin, the evaluator (this
process) and a bystander process of the same user survive, the canary files in the project and the
listener on 127.0.0.1 see nothing, and no process of the run is left.
"""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from snakechat.evaluate import humaneval_sandbox
from snakechat.evaluate import tasks
from snakechat.evaluate.humaneval_sandbox import Sandbox, SandboxUnavailable

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 3.0  # seconds of wall clock per run
MARGIN = 3.0  # the machine is shared: a run may end this much after its limit
SECRET = "snakechat-sandbox-secret-4f1c"
RECORD = {
    "task_id": "Test/0",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
WRONG = "def add(a, b):\n    return a - b\n"


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(timeout=LIMIT, memory_bytes=512 << 20)
    box.verify()
    return box


class Host:
    """What lies outside the sandbox: canary files in the project, a listener, a bystander process, a secret."""

    def __init__(self, directory):
        self.dir = directory
        self.files = {self.dir / "victim.txt": b"do not touch\n", self.dir / "keep" / "data.bin": os.urandom(64)}
        for path, data in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.bystander = subprocess.Popen(["sleep", "120"])
        self.mtimes = self._tree()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
                self.connections += 1
                conn.close()
            except (TimeoutError, OSError):
                continue

    def _tree(self):
        return sorted((str(p), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"") for p in self.dir.rglob("*"))

    @property
    def params(self):
        return {"dir": str(self.dir), "victim": str(self.dir / "victim.txt"), "port": self.listener.getsockname()[1],
                "evaluator": os.getpid(), "bystander": self.bystander.pid, "secret": SECRET}

    def assert_untouched(self):
        assert self._tree() == self.mtimes, "a file outside the sandbox changed"
        for path, data in self.files.items():
            assert path.read_bytes() == data
        time.sleep(0.1)
        assert self.connections == 0, "something connected to 127.0.0.1"
        assert self.bystander.poll() is None, "the bystander process was killed"

    def close(self):
        self._stop = True
        self._thread.join()
        self.listener.close()
        self.bystander.kill()
        self.bystander.wait()


@pytest.fixture
def host(monkeypatch):
    monkeypatch.setenv("SNAKECHAT_SECRET", SECRET)
    directory = ROOT / "results" / f".sandbox-canary-{os.getpid()}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    h = Host(directory)
    yield h
    h.close()
    shutil.rmtree(directory)


def harness_processes():
    """Our descendants still running the harness: a run must leave none."""
    parents, harness = {}, []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
            if b"harness.py" in cmdline:
                harness.append(int(entry.name))
    def ours(pid):
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False
    return [pid for pid in harness if ours(pid)]


RAN = "the attack ran to its end"


def attack(sandbox, host, code, limit=LIMIT, runs_through=True, answer=WRONG):
    """Run `code` (which sees the dict P of host facts), then a wrong `add`, and check it is contained;
    with `runs_through`, also that the code got to its end (the attack was tried, not stopped by an import error)."""
    program = f"P = {json.dumps(host.params)}\n" + textwrap.dedent(code) + f"\nprint({RAN!r})\n" + answer
    start = time.monotonic()
    result = sandbox.run(program, RECORD["test"], "add")
    took = time.monotonic() - start
    assert not result.passed, result
    assert took <= limit + MARGIN, f"the run took {took:.1f} s with a {limit} s limit"
    host.assert_untouched()
    assert SECRET not in result.detail
    assert harness_processes() == []
    if runs_through:
        assert RAN in result.detail, result
    return result


def check_reply(sandbox, reply):
    return sandbox.run(tasks.humaneval_candidate(RECORD, reply), RECORD["test"], RECORD["entry_point"])


def test_correct_solutions_pass_and_wrong_ones_fail(sandbox):
    whole = RECORD["prompt"] + RECORD["canonical_solution"]
    ok = check_reply(sandbox, whole)
    assert ok.passed and ok.status == "passed", ok
    fenced = check_reply(sandbox, "Here:\n```python\n" + whole + "\n```\n")
    assert fenced.passed, fenced
    wrong = check_reply(sandbox, WRONG)
    assert not wrong.passed and wrong.status == "failed" and "AssertionError" in wrong.detail


def test_plain_values_cross_exactly_and_exceptions_keep_their_type(sandbox):
    program = textwrap.dedent("""
        import math
        SCALE = 2.5
        def f(x):
            if x == "raise":
                raise ValueError("no")
            return [x, (1, -2**200, 0.1, float("inf"), 3j, b"\\x00"), {"k": {1, 2}, 3: frozenset()}, None, True]
        def helper(v):
            return v * SCALE
    """)
    tests = textwrap.dedent("""
        def check(candidate):
            got = candidate("a")
            assert got == ["a", (1, -2**200, 0.1, float("inf"), 3j, b"\\x00"), {"k": {1, 2}, 3: frozenset()}, None, True]
            assert type(got[1][1]) is int and got[1][4].imag == 3.0 and got[4] is True
            assert helper(2) == 5.0 and SCALE == 2.5 and math.pi > 3
            try:
                candidate("raise")
            except ValueError as e:
                assert "no" in str(e)
            else:
                raise AssertionError("expected ValueError")
    """)
    result = sandbox.run(program, tests, "f")
    assert result.passed, result


@pytest.mark.parametrize("shadow, tests", [
    ("def abs(x):\n    return 0\n", "def check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-9\n"),
    ("def all(x):\n    return True\n", "def check(candidate):\n    assert all([candidate(2, 3) == 5, candidate(-1, 1) == 0])\n"),
    ("import math as len\n", "def check(candidate):\n    assert len([candidate(2, 3)]) == 1 and candidate(2, 3) == 5\n"),
])
def test_a_program_shadowing_the_tests_builtins_does_not_pass(sandbox, shadow, tests):
    """The tests' builtins stay the builtins: a wrong `add` with its own `abs` (or `all`) fails."""
    result = sandbox.run(shadow + WRONG, tests, "add")
    assert not result.passed and result.status == "failed", result
    assert sandbox.run(shadow + RECORD["prompt"] + RECORD["canonical_solution"], tests, "add").passed


EXIT_TRICKS = {
    # name: (code run before the wrong answer, whether that code runs to its end)
    "sys.exit": ("import sys\nsys.exit(0)", False),
    "exit": ("exit()", False),
    "SystemExit": ("raise SystemExit(0)", False),
    "os._exit": ("import os\nos._exit(0)", False),
    "atexit": ("import atexit, os\natexit.register(lambda: os._exit(0))\nraise RuntimeError('boom')", False),
    "excepthook": ("import sys, os\nsys.excepthook = lambda *a: os._exit(0)\nraise RuntimeError('boom')", False),
    # a tracer that jumps over the asserts of whichever frame calls add()
    "settrace": ("""
        import sys
        def skip(frame, event, arg):
            if event == "line" and frame.f_code.co_name == "check":
                frame.f_lineno = frame.f_code.co_firstlineno + 3
            return skip
        sys.settrace(skip)
        if sys._getframe().f_back is not None:
            sys._getframe().f_back.f_trace = skip
        """, True),
    # guessing at the verdict channel: 'passed' written to every descriptor
    "forged-verdict": ("""
        import os
        for fd in range(0, 64):
            try:
                os.write(fd, b"passed 00000000000000000000000000000000")
            except OSError:
                pass
        """, True),
}


@pytest.mark.parametrize("name", EXIT_TRICKS)
def test_exit_tricks_do_not_pass(sandbox, host, name):
    code, runs_through = EXIT_TRICKS[name]
    attack(sandbox, host, code, runs_through=runs_through)


def test_exit_inside_the_call_does_not_pass(sandbox, host):
    attack(sandbox, host, "", answer="def add(a, b):\n    import os\n    os._exit(0)\n")
    attack(sandbox, host, "", answer="def add(a, b):\n    raise SystemExit(0)\n")


# what a program would do to take the token from the tests' process (its parent), which holds its descriptor
THEFT = textwrap.dedent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    print("ptrace", libc.ptrace(16, parent, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
    buf = ctypes.create_string_buffer(64)
    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    local, remote = IoVec(ctypes.addressof(buf), 64), IoVec(0x400000, 64)
    print("process_vm_readv", libc.process_vm_readv(parent, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0), ctypes.get_errno())
    pidfd = os.pidfd_open(parent)
    for fd in range(3, 16):
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        print("pidfd_getfd", fd, got, ctypes.get_errno())
        if got >= 0:
            try:
                print("stolen", os.read(got, 256))
            except OSError:
                pass
""")


def assert_theft_refused(detail):
    assert "stolen" not in detail, detail
    assert "ptrace -1 1" in detail and "process_vm_readv -1 1" in detail and "pidfd_getfd 3 -1 1" in detail, detail  # EPERM


def test_the_token_cannot_be_taken_from_the_tests_process(sandbox, host):
    """ptrace, process_vm_readv and pidfd_getfd on the tests' process are refused: it is non-dumpable
    (and, started as root, the harness runs as uid 65534 without capabilities)."""
    assert_theft_refused(attack(sandbox, host, THEFT).detail)


def test_always_equal_object_does_not_pass(sandbox, host):
    result = attack(sandbox, host, "", answer=textwrap.dedent("""
        class Anything(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Anything(0)
    """))
    assert "not plain data" in result.detail


def test_always_equal_object_fails_with_a_correct_tests_file(sandbox):
    """Also where the program redefines check() and the comparison helpers: the tests are the record's."""
    program = textwrap.dedent("""
        def check(candidate):
            return None
        class Yes(list):
            def __eq__(self, other):
                return True
        def add(a, b):
            return Yes()
    """)
    assert not sandbox.run(program, RECORD["test"], "add").passed


@pytest.mark.parametrize(
    "route",
    [
        # posix directly: write, delete, run a command, kill
        """
        import posix
        for path in (P["victim"], P["dir"] + "/new.txt"):
            try:
                fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC)
                posix.write(fd, b"owned")
            except OSError:
                pass
        for call in (lambda: posix.unlink(P["victim"]), lambda: posix.system("touch " + P["dir"] + "/x"),
                     lambda: posix.kill(P["bystander"], 9), lambda: posix.kill(P["evaluator"], 9)):
            try:
                call()
            except OSError:
                pass
        """,
        # _socket directly
        """
        import _socket
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", P["port"]))
        except OSError as e:
            print("no connection:", e)
        """,
        # ctypes: libc's own system(), unlink(), kill()
        """
        import ctypes
        libc = ctypes.CDLL(None)
        libc.system(("rm -f " + P["victim"]).encode())
        libc.unlink(P["victim"].encode())
        libc.kill(P["bystander"], 9)
        libc.kill(P["evaluator"], 9)
        libc.kill(-1, 9)
        """,
        # importlib.reload of the modules a guard would have patched
        """
        import importlib, os, socket, subprocess
        for m in (os, socket, subprocess):
            importlib.reload(m)
        try:
            os.remove(P["victim"])
        except OSError:
            pass
        try:
            subprocess.run(["rm", "-f", P["victim"]])
        except OSError:
            pass
        try:
            socket.create_connection(("127.0.0.1", P["port"]), timeout=1)
        except OSError:
            pass
        """,
    ],
    ids=["posix", "_socket", "ctypes", "importlib.reload"],
)
def test_import_routes_reach_nothing(sandbox, host, route):
    attack(sandbox, host, route)


def test_file_writes_outside_the_temp_dir_change_nothing(sandbox, host):
    result = attack(sandbox, host, """
        import os
        results = []
        for path in (P["victim"], P["dir"] + "/keep/data.bin", P["dir"] + "/new.txt", "/etc/passwd", "/usr/x", "/x",
                     os.path.expanduser("~/.bashrc"), "/root/.bashrc"):
            try:
                with open(path, "w") as f:
                    f.write("owned")
                results.append(("wrote", path))
            except OSError as e:
                results.append(("refused", path, e.errno))
        for path in (P["victim"], P["dir"]):
            try:
                os.remove(path) if path.endswith(".txt") else os.rmdir(path)
            except OSError as e:
                results.append(("refused", path, e.errno))
        with open("/tmp/scratch.txt", "w") as f:  # the private temp dir is writable
            f.write("fine")
        results.append(("tmp", open("/tmp/scratch.txt").read()))
        print(results)
    """)
    assert "('tmp', 'fine')" in result.detail  # the program ran, and its own /tmp worked


def test_the_parents_environment_and_files_are_not_readable(sandbox, host):
    result = attack(sandbox, host, """
        import os
        seen = [dict(os.environ)]
        for path in ("/proc/1/environ", f"/proc/{os.getppid()}/environ", f"/proc/{P['evaluator']}/environ", "/proc/self/environ",
                     "/etc/passwd", "/etc/shadow", P["victim"]):
            try:
                seen.append(open(path, "rb").read())
            except OSError as e:
                seen.append(f"{path}: {e.strerror}")
        print(seen)
    """)
    assert "No such file or directory" in result.detail
    assert "do not touch" not in result.detail and "root:x:0:0" not in result.detail


def test_no_network_not_even_loopback(sandbox, host):
    result = attack(sandbox, host, """
        import socket
        for target in (("127.0.0.1", P["port"]), ("localhost", P["port"]), ("8.8.8.8", 53)):
            try:
                socket.create_connection(target, timeout=1)
                print("connected", target)
            except OSError as e:
                print("refused", target, e)
    """)
    assert "connected" not in result.detail and "refused" in result.detail


def test_fork_bomb_is_bounded(sandbox, host):
    result = attack(sandbox, host, """
        import os, time
        made = 0
        try:
            while made < 2000:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                made += 1
        except OSError as e:
            print("forks before refusal:", made, e)
    """)
    made = int(result.detail.split("forks before refusal:")[1].split()[0])
    assert made < sandbox.processes


FORK_BOMB = """
import os, time
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
except OSError:
    time.sleep(60)  # hold the whole budget until the wall clock ends the run
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="started as root, every run drops to a uid; unprivileged runs each have a user namespace")
def test_a_fork_bomb_beside_correct_solutions_fails_none_of_them(sandbox):
    """Concurrent runs as root each have their own process budget: a bomb that holds all of its own
    leaves the correct solutions that run beside it passing."""
    correct = RECORD["prompt"] + RECORD["canonical_solution"]
    results = {}

    def run(name, program):
        results[name] = sandbox.run(program, RECORD["test"], "add")

    bomb = threading.Thread(target=run, args=("bomb", FORK_BOMB + WRONG))
    bomb.start()
    time.sleep(1.0)  # the bomb has forked to its limit and holds it
    others = [threading.Thread(target=run, args=(i, correct)) for i in range(3)]
    for t in others:
        t.start()
    for t in [bomb, *others]:
        t.join()
    assert not results["bomb"].passed and results["bomb"].status == "timeout", results["bomb"]
    for i in range(3):
        assert results[i].passed, results[i]
    assert harness_processes() == []


def test_the_uid_pool_gives_concurrent_runs_distinct_uids(monkeypatch):
    """A uid held by one run is not given to another until that run ends, however the slots are drawn."""
    monkeypatch.setattr(humaneval_sandbox.secrets, "randbelow", lambda n: 7)  # every run starts at the same slot
    with humaneval_sandbox.run_uid() as a, humaneval_sandbox.run_uid() as b:
        assert a == humaneval_sandbox.RUN_UID_BASE + 7 and b == a + 1
    with humaneval_sandbox.run_uid() as c:
        assert c == a  # given back


def test_8gb_allocation_fails(sandbox, host):
    result = attack(sandbox, host, """
        try:
            block = bytearray(8 << 30)
        except MemoryError:
            print("MemoryError")
    """)
    assert "MemoryError" in result.detail


def test_infinite_loop_is_killed_at_the_wall_clock_limit(sandbox, host):
    result = attack(sandbox, host, "while True:\n    pass", runs_through=False)
    assert result.status == "timeout"
    result = attack(sandbox, host, "import time\ntime.sleep(600)", runs_through=False)
    assert result.status == "timeout"


def test_setsid_child_does_not_outlive_the_run(sandbox, host):
    # the program hangs and its daemonised child would live on
    result = attack(sandbox, host, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        time.sleep(600)
    """, runs_through=False)
    assert result.status == "timeout"
    # a correct answer that leaves a daemon behind passes, and the daemon is gone with the run
    program = textwrap.dedent("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        def add(a, b):
            return a + b
    """)
    start = time.monotonic()
    assert sandbox.run(program, RECORD["test"], "add").passed
    assert time.monotonic() - start < LIMIT
    assert harness_processes() == []


def test_huge_output_is_cut_and_the_evaluator_does_not_grow(sandbox, host):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = attack(sandbox, host, """
        import os, sys
        block = "x" * (1 << 20)
        for _ in range(500):
            try:
                sys.stderr.write(block)
                sys.stdout.write(block)
            except OSError:
                pass
    """, runs_through=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(result.detail) < sandbox.output_bytes + 1000
    assert "output cut at" in result.detail
    assert grown_mb < 50


def test_killing_the_parent_and_everyone_else(sandbox, host):
    result = attack(sandbox, host, """
        import os, signal
        for pid in (P["evaluator"], P["bystander"], -1, os.getppid(), 1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError as e:
                print("kill", pid, e)
    """)
    assert result.status in ("failed", "timeout")


def test_oversized_job_is_refused(sandbox):
    """A job over the harness's input limit is refused, not read into memory."""
    result = sandbox.run("def f():\n    return 1\n" + "#" * (9 << 20), "def check(c):\n    assert c() == 1\n", "f")
    assert not result.passed


def test_unsandboxed_is_an_explicit_opt_in_and_still_needs_the_token(host):
    box = Sandbox(timeout=LIMIT, unsandboxed=True)
    box.verify()
    assert check_reply(box, RECORD["prompt"] + RECORD["canonical_solution"]).passed
    assert not box.run(f"P = {json.dumps(host.params)}\nimport os\nos._exit(0)\n" + WRONG, RECORD["test"], "add").passed


def test_missing_bwrap_is_refused_with_how_to_allow_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable) as err:
        Sandbox(timeout=LIMIT).verify()
    message = str(err.value)
    assert "bwrap (bubblewrap) is not installed" in message
    assert "apt-get install bubblewrap" in message and "chat_eval.unsandboxed: true" in message and "docs/cluster.md" in message


@pytest.fixture
def shared_dir():
    """A directory another user can read (pytest's tmp_path is private to us)."""
    directory = Path(tempfile.mkdtemp(prefix="snakechat-sandbox-test-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory)


def _copy_modules(directory):
    """The sandbox modules where another user can read them (the checkout may be private)."""
    package = directory / "snakechat"
    (package / "evaluate").mkdir(parents=True)
    src = Path(humaneval_sandbox.__file__).parent
    shutil.copy(src.parent / "__init__.py", package / "__init__.py")
    for name in ("__init__.py", "humaneval_sandbox.py", "sandbox_harness.py"):
        shutil.copy(src / name, package / "evaluate" / name)
    os.chmod(directory, 0o755)
    for p in [package, *package.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return directory


USER_SCRIPT = textwrap.dedent("""
    import json, os, sys
    THEFT = json.loads(sys.argv[1])
    from snakechat.evaluate.humaneval_sandbox import Sandbox, SandboxUnavailable
    box = Sandbox(timeout=3)
    out = {"uid": os.getuid()}
    try:
        box.verify()
    except SandboxUnavailable as e:
        out["unavailable"] = str(e)
        print(json.dumps(out))
        sys.exit(0)
    bomb = "import os, time\\nn = 0\\ntry:\\n    while n < 500:\\n        if os.fork() == 0:\\n            time.sleep(30)\\n            os._exit(0)\\n        n += 1\\nexcept OSError:\\n    print('forks', n)\\ndef add(a, b):\\n    return a - b\\n"
    r = box.run(bomb, "def check(c):\\n    assert c(2, 3) == 5\\n", "add")
    out["bomb"] = [r.passed, r.detail]
    out["ok"] = box.run("def add(a, b):\\n    return a + b\\n", "def check(c):\\n    assert c(2, 3) == 5\\n", "add").passed
    r = box.run(THEFT + "def add(a, b):\\n    return a - b\\n", "def check(c):\\n    assert c(2, 3) == 5\\n", "add")
    out["theft"] = [r.passed, r.detail]
    print(json.dumps(out))
""")


def _as_user(shared_dir, wrapper=()):
    """Run USER_SCRIPT as an unprivileged user (nobody, when we are root), with the system's python3."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.fail("needs /usr/bin/python3 (Debian's python3) to run the sandbox as another user")
    code = _copy_modules(shared_dir)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    run = subprocess.run([*drop, *wrapper, python, "-c", USER_SCRIPT, json.dumps(THEFT)], cwd="/", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_works_for_an_unprivileged_user_in_a_user_namespace(shared_dir):
    """The cluster's case: bwrap run by a normal user, the process limit set inside the new user namespace."""
    out = _as_user(shared_dir)
    assert "unavailable" not in out, out
    assert out["ok"] is True
    passed, detail = out["bomb"]
    assert not passed and int(detail.split("forks")[1].split()[0]) < 32
    passed, detail = out["theft"]  # same uid as the tests' process here: only its being non-dumpable keeps the token
    assert not passed
    assert_theft_refused(detail)


def test_refused_where_user_namespaces_are_not_allowed(shared_dir):
    """A user that may not create user namespaces (here: inside a bwrap that disables them) gets the reason and the way out."""
    wrapper = ["bwrap", "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--tmpfs", "/tmp", "--ro-bind", str(shared_dir), str(shared_dir)]
    out = _as_user(shared_dir, wrapper)
    assert "unavailable" in out, out
    assert "could not run a trivial program" in out["unavailable"] and "bwrap:" in out["unavailable"]
    assert "user namespaces" in out["unavailable"] and "chat_eval.unsandboxed: true" in out["unavailable"]
