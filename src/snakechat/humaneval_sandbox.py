"""Run model-written code against HumanEval tests in a separate, limited Python process.

`run_program(source)` writes the program into a fresh temporary directory and runs it with
`python -I` (isolated: no user site, no PYTHON* variables, script dir not on sys.path) and:
- a guard prepended to the program that first sets CPU time, address space, file size and
  open-file limits with `resource`, then makes socket creation, subprocesses, fork and file
  deletion raise, so the code cannot reach the network or the rest of the machine (set in the
  child itself, not by a preexec_fn, which is unsafe in a process with threads);
- a wall-clock timeout, after which the whole process group is killed.
These are guards against accidents of a small model, not a security boundary against an attacker.
"""

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

GUARD = '''
import builtins, os, resource, shutil, socket, subprocess
for _limit, _value in ((resource.RLIMIT_CPU, {cpu_seconds}), (resource.RLIMIT_AS, {memory_bytes}),
                       (resource.RLIMIT_FSIZE, 1 << 20), (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_limit, (_value, _value))
def _refused(*args, **kwargs):
    raise PermissionError("not allowed in the HumanEval sandbox")
class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _refused()
socket.socket = _NoSocket
for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
    setattr(socket, _name, _refused)
subprocess.Popen = _refused
for _name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "remove", "unlink", "rmdir",
              "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "putenv",
              "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, _refused)
shutil.rmtree = _refused
shutil.move = _refused
del builtins, os, resource, shutil, socket, subprocess, _name, _limit, _value
'''


@dataclass
class SandboxResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str  # the tail of stderr, for the log


def run_program(source, timeout=10.0, memory_bytes=1 << 30):
    """Run `source` (program + tests) in a limited subprocess; passed means exit status 0."""
    with tempfile.TemporaryDirectory(prefix="snakechat-sandbox-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w") as f:
            f.write(GUARD.format(cpu_seconds=int(timeout) + 1, memory_bytes=memory_bytes) + "\n" + source)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        proc = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return SandboxResult(False, "timeout", f"killed after {timeout} s")
        detail = stderr.decode("utf-8", "replace")[-2000:]
        if proc.returncode == 0:
            return SandboxResult(True, "passed", detail)
        if proc.returncode == -signal.SIGXCPU or proc.returncode == -signal.SIGKILL:
            return SandboxResult(False, "timeout", f"CPU time limit (signal {-proc.returncode})")
        return SandboxResult(False, "failed", detail)


def humaneval_program(record, completion):
    """The program that checks a completion: the prompt's imports and function, the tests, check(entry_point).

    A completion that defines the entry point itself is used as it is (with the prompt's imports);
    otherwise it is taken as the body that continues the prompt.
    """
    prompt, entry = record["prompt"], record["entry_point"]
    if f"def {entry}(" in completion:
        imports = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
        program = imports + "\n\n" + completion
    else:
        program = prompt + completion
    return f"{program}\n\n{record['test']}\n\ncheck({entry})\n"


def extract_code(text):
    """The code in a model reply: the first ```python fenced block if there is one, else the reply."""
    for fence in ("```python", "```py", "```"):
        start = text.find(fence)
        if start != -1:
            start += len(fence)
            end = text.find("```", start)
            return text[start : end if end != -1 else len(text)].strip("\n")
    return text


def check_completion(record, completion, timeout=10.0, memory_bytes=1 << 30):
    return run_program(humaneval_program(record, extract_code(completion)), timeout=timeout, memory_bytes=memory_bytes)
