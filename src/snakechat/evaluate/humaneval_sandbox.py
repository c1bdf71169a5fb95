"""Run model-written code (HumanEval completions) against their tests inside a bubblewrap sandbox.

`Sandbox(timeout=...).run(program, tests, entry_point)` starts `bwrap` (Debian's bubblewrap) with
new PID, network, IPC, UTS, cgroup and mount namespaces and, unless started as root, a new user
namespace (nested ones disabled). Inside there is no network at all and a read-only view of only
what the interpreter needs: its binary, its standard library (site-packages hidden) and the shared
libraries `ldd` names for them; a fresh /dev, a private writable /tmp (a small tmpfs) and the
harness file. Nothing of the project, results, home or the host's /proc is there. Started as root,
bwrap runs privileged and the harness drops to a uid of its own before anything else (root inside
a user namespace would still be root on the host for the process limit): the process limit counts
per uid, so each concurrent run holds a distinct uid from a pool (a lock file per uid), and one
run's fork bomb cannot use up another's budget.

The harness (`snakechat.evaluate.sandbox_harness`) sets the rlimits (CPU, address space, processes, file
size, open files, no core), runs the program in a process of its own and the tests in another, and
reports a pass only by writing a per-run random token after check() returns; the program never
holds the token (see that module). Output is read up to a fixed size, then the pipe is closed.
At the wall-clock limit the bwrap process is killed: --die-with-parent kills the namespace's init,
and with it every process of the run, daemonised or not.

Where the sandbox cannot start (no bwrap, no unprivileged user namespaces) `verify()` raises
SandboxUnavailable saying why and how to allow it. `unsandboxed=True` (the config's explicit
opt-in) runs the same harness as a plain subprocess with the same rlimits but the process limit and
no isolation; it is never chosen silently.
"""

import contextlib
import fcntl
import functools
import glob
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HARNESS = Path(__file__).with_name("sandbox_harness.py")
# uids the harness drops to where bwrap starts as root, one per concurrent run: far above the
# ranges that /etc/subuid and system accounts use, and owning no file (the sandbox writes to a tmpfs)
RUN_UID_BASE = 2_000_000_000
RUN_UID_SLOTS = 4096
TMP_BYTES = 32 << 20  # size of the sandbox's /tmp
VERDICT_BYTES = 4096
KILL_GRACE_S = 2.0

HOW_TO_ALLOW = (
    "To allow it: install bubblewrap (apt-get install bubblewrap) and let unprivileged users create user namespaces "
    "(user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 where that setting exists; on Ubuntu 23.10 and later "
    "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap) - see docs/cluster.md. "
    "Or opt in to running it without isolation, as your own user: chat_eval.unsandboxed: true in the config (--unsandboxed true)."
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start on this machine; the message says why and how to allow it."""


@dataclass
class SandboxResult:
    passed: bool
    status: str  # "passed", "failed", "timeout" or "error" (the sandbox itself did not start)
    detail: str  # the harness's verdict and the start of the program's output, for the log
    seconds: float


def _under(path, directories):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def shared_libraries(files):
    """Paths of the shared libraries (and the loader) the given ELF files load, as `ldd` resolves them."""
    if shutil.which("ldd") is None:
        raise SandboxUnavailable("ldd (Debian's libc-bin) is not installed, so the interpreter's libraries cannot be listed")
    out = subprocess.run(["ldd", *files], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith("\t"):
            continue
        text = line.strip().partition(" => ")[2] or line.strip()
        path = text.partition(" (")[0].strip()
        if path.startswith("/") and path not in found:
            found.append(path)
    return found


@functools.lru_cache(maxsize=None)
def interpreter_view(executable):
    """(interpreter, paths to bind read-only, directories to hide) for running `interpreter -I -S` in the sandbox."""
    python = os.path.realpath(executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    dynload = os.path.realpath(sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload"))
    directories = [stdlib] + ([dynload] if os.path.isdir(dynload) and not _under(dynload, [stdlib]) else [])
    modules = sorted(glob.glob(os.path.join(dynload, "*.so")))
    libraries = [lib for lib in shared_libraries([python, *modules]) if not _under(os.path.realpath(lib), directories)]
    hidden = [d for d in (os.path.join(stdlib, "site-packages"), os.path.join(stdlib, "dist-packages")) if os.path.isdir(d)]
    return python, tuple([python, *directories, *libraries]), tuple(hidden)


def _uid_lock_dir():
    """The directory of the uid pool's lock files, shared by every run on this host: created private,
    and refused where someone else owns it (they could hold every uid)."""
    parent = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    directory = os.path.join(parent, "snakechat-sandbox-uids")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    if not os.path.isdir(directory) or os.path.islink(directory) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SandboxUnavailable(f"{directory} (the sandbox's uid locks) must be a directory of uid {os.geteuid()} that only it can write")
    return directory


@contextlib.contextmanager
def run_uid():
    """A uid that no other run on this host holds until the context ends (flock on a file per uid,
    released by the kernel if this process dies). Slots are tried from a random one, so that a uid
    just given back is not the next one taken while its killed processes are still being reaped."""
    directory = _uid_lock_dir()
    first = secrets.randbelow(RUN_UID_SLOTS)
    for i in range(RUN_UID_SLOTS):
        slot = (first + i) % RUN_UID_SLOTS
        fd = os.open(os.path.join(directory, str(slot)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield RUN_UID_BASE + slot
        finally:
            os.close(fd)
        return
    raise SandboxUnavailable(f"all {RUN_UID_SLOTS} sandbox uids are held by concurrent runs")


class Sandbox:
    """Runs programs against their tests, isolated (bubblewrap) unless `unsandboxed` is set."""

    def __init__(self, timeout=10.0, memory_bytes=1 << 30, processes=32, file_bytes=1 << 20, open_files=64,
                 output_bytes=64 << 10, unsandboxed=False):
        self.timeout, self.memory_bytes, self.processes = float(timeout), int(memory_bytes), int(processes)
        self.file_bytes, self.open_files, self.output_bytes = int(file_bytes), int(open_files), int(output_bytes)
        self.unsandboxed = bool(unsandboxed)

    def _harness_args(self, token_fd, result_fd, nproc):
        return ["--token-fd", str(token_fd), "--result-fd", str(result_fd), "--cpu", str(int(self.timeout) + 1),
                "--memory", str(self.memory_bytes), "--file-size", str(self.file_bytes), "--open-files", str(self.open_files),
                "--nproc", str(nproc)]

    def command(self, token_fd, result_fd, uid=None):
        """The argv that runs the harness (inside bwrap unless unsandboxed); started as root, the
        harness drops to `uid`, which must be this run's alone (run_uid)."""
        if self.unsandboxed:
            # RLIMIT_NPROC would count every process of the user here, not just the run's
            return [os.path.realpath(sys.executable), "-I", "-S", "-u", str(HARNESS), *self._harness_args(token_fd, result_fd, 0)]
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable("bwrap (bubblewrap) is not installed")
        python, binds, hidden = interpreter_view(sys.executable)
        root = os.geteuid() == 0
        if root and uid is None:
            raise ValueError("started as root, a run needs a uid of its own (run_uid())")
        argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
                "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8"]
        if root:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        for directory in sorted({str(parent) for path in binds for parent in Path(path).parents} - {"/"}):
            argv += ["--perms", "0755", "--dir", directory]  # bwrap would make them 0700: closed to the harness once it dropped root
        for path in binds:
            argv += ["--ro-bind", path, path]
        for path in hidden:
            argv += ["--tmpfs", path]
        argv += ["--ro-bind", str(HARNESS), "/harness.py", "--dev", "/dev", "--perms", "1777", "--size", str(TMP_BYTES),
                 "--tmpfs", "/tmp", "--chdir", "/tmp", "--", python, "-I", "-S", "-u", "/harness.py",
                 *self._harness_args(token_fd, result_fd, self.processes)]
        return argv + (["--drop-to", str(uid)] if root else [])

    def run(self, program, tests, entry_point):
        """Run `tests` (code defining check(candidate)) against `entry_point` of `program`; never raises for what the program does."""
        job = json.dumps({"program": program, "tests": tests, "entry_point": entry_point}).encode()
        token = secrets.token_hex(16).encode()
        own_uid = run_uid() if os.geteuid() == 0 and not self.unsandboxed else contextlib.nullcontext()
        with own_uid as uid, tempfile.TemporaryDirectory(prefix="snakechat-sandbox-") as tmp:
            token_r, token_w = os.pipe()
            result_r, result_w = os.pipe()
            os.write(token_w, token)
            os.close(token_w)
            start = time.monotonic()
            try:
                argv = self.command(token_r, result_w, uid)
                env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        pass_fds=(token_r, result_w), cwd=tmp, env=env, start_new_session=True)
            except BaseException:
                os.close(result_r)
                raise
            finally:
                os.close(token_r)
                os.close(result_w)
            try:
                verdict, output, timed_out = self._collect(proc, job, result_r, start + self.timeout)
            finally:
                os.close(result_r)
        seconds = time.monotonic() - start
        text = output.decode("utf-8", "replace")
        if verdict == b"passed " + token:
            return SandboxResult(True, "passed", text, seconds)
        if timed_out:
            return SandboxResult(False, "timeout", f"killed after {self.timeout:g} s wall clock\n{text}", seconds)
        if verdict.startswith(b"error "):  # the harness could not run the program: not the program's failure
            return SandboxResult(False, "error", verdict.decode("utf-8", "replace") + "\n" + text, seconds)
        if verdict.startswith(b"failed "):
            return SandboxResult(False, "failed", verdict.decode("utf-8", "replace") + "\n" + text, seconds)
        if text.startswith("bwrap:"):
            return SandboxResult(False, "error", text, seconds)
        return SandboxResult(False, "failed", f"no verdict from the harness (exit status {proc.returncode})\n{text}", seconds)

    def _collect(self, proc, job, result_fd, deadline):
        """(verdict, output, timed out): read both pipes, each up to a fixed size, until the harness is done or time is up."""
        def feed():
            try:
                proc.stdin.write(job)
                proc.stdin.close()
            except OSError:  # the harness died first; its verdict says so
                pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        out_fd = proc.stdout.fileno()
        limits = {out_fd: self.output_bytes, result_fd: VERDICT_BYTES}
        buffers = {fd: bytearray() for fd in limits}
        sel = selectors.DefaultSelector()
        for fd in limits:
            sel.register(fd, selectors.EVENT_READ)

        def read(fd):
            chunk = os.read(fd, 65536)
            buffers[fd] += chunk[: max(limits[fd] - len(buffers[fd]), 0)]
            if not chunk or len(buffers[fd]) >= limits[fd]:
                sel.unregister(fd)
                if fd == out_fd and chunk:  # full: stop reading, so that a writer that goes on gets EPIPE
                    buffers[fd] += f"\n[output cut at {limits[fd]} bytes]".encode()
                    proc.stdout.close()

        timed_out = False
        while result_fd in sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining):
                read(key.fd)
        if not timed_out:
            try:
                proc.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                timed_out = True
        if proc.poll() is None:
            self._kill(proc)
        # the rest of the output: bwrap's end of it closes as the namespace dies; without bwrap a
        # daemonised child may hold it open, so wait a moment only
        end = time.monotonic() + (0.1 if self.unsandboxed else KILL_GRACE_S)
        while out_fd in sel.get_map() and (remaining := end - time.monotonic()) > 0:
            for key, _ in sel.select(remaining):
                read(key.fd)
        sel.close()
        if not proc.stdout.closed:
            proc.stdout.close()
        feeder.join(KILL_GRACE_S)
        return bytes(buffers[result_fd]), bytes(buffers[out_fd]), timed_out

    @staticmethod
    def _kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def verify(self):
        """Run a trivial job; raise SandboxUnavailable (why, and how to allow it) unless it passes."""
        try:
            result = self.run("def f():\n    return 1\n", "def check(candidate):\n    assert candidate() == 1\n", "f")
        except SandboxUnavailable as e:
            raise SandboxUnavailable(f"HumanEval runs model-written code, which is only run inside a sandbox, and the sandbox cannot start here: {e}. {HOW_TO_ALLOW}") from None
        if not result.passed:
            where = "the unsandboxed harness" if self.unsandboxed else "bwrap"
            raise SandboxUnavailable(f"HumanEval runs model-written code, which is only run inside a sandbox, and {where} could not run a trivial program: "
                                     f"{result.detail.strip()[:1000]}. {HOW_TO_ALLOW}")
        return result

