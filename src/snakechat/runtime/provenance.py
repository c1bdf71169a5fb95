"""Where a result came from: code fingerprints, config hashes, input hashes, package version and git commit.

Snakemake's code trigger only sees a rule's shell text. `code_fingerprint` hashes the snakechat
modules a stage really imports (followed transitively), so a rule that passes it as a param is
re-run when its code changes and not when unrelated code does.
"""

import ast
import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(name):
    rel = name.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*rel)
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def _local_imports(path):
    """Names of the snakechat modules that `path` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "snakechat")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = "snakechat"
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "snakechat":
                continue
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from snakechat import gpt`
    return {m for m in found if _module_file(m) is not None}


@lru_cache(maxsize=None)
def module_closure(module):
    """The module and every snakechat module it imports, directly or not, sorted."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            raise ValueError(f"no module {name!r} in {PACKAGE_DIR}")
        seen.add(name)
        todo.extend(_local_imports(path) - seen)
    return tuple(sorted(seen))


def code_fingerprint(*modules):
    """A short hash of the source of the given modules and everything they import from snakechat."""
    names = sorted({m for mod in modules for m in module_closure(mod)})
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(_module_file(name).read_bytes())
    return h.hexdigest()[:16]


def hash_obj(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_path(path):
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(hash_file(f).encode())
    return h.hexdigest()


def git_state(where=PACKAGE_DIR):
    """(commit, dirty) of the checkout the package runs from, or (None, None) outside git.

    Dirty means a tracked file differs from the commit. Untracked files (results, logs, a local
    config overlay, notes) do not count: they are not code, and a result records its own config
    and input hashes beside this.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, check=True)
        return commit, bool(status.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None


def record(module, stage_config, inputs=()):
    """The provenance block a stage stores beside its output (in meta.json or a sidecar)."""
    from importlib.metadata import version

    commit, dirty = git_state()
    return {
        "module": module,
        "config": stage_config,
        "config_hash": hash_obj(stage_config),
        "inputs": {str(p): hash_path(p) for p in inputs if Path(p).exists()},
        "code_fingerprint": code_fingerprint(module),
        "snakechat_version": version("snakechat"),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "host": platform.node(),
    }
