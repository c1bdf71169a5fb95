"""Resumable training states: what a run saves so that a new process continues it exactly.

A state (`state_{step:08d}.pt`) holds the weights, the optimizers' moments, the recipe's position
(one per process), the RNGs, the counters and the identity it was made under. States are written
atomically, each with its sha256 beside it (`state_{step:08d}.pt.sha256`, in `sha256sum` format,
written after the state). Loading takes the newest state whose sha256 matches and that reads as a
state (`torch.load(weights_only=True)`: tensors and plain data, no code from the file); a corrupt
one, or one without its sha256, is skipped with a warning naming it, falling back to the one
before it (the newest two are kept).
"""

import shutil
import warnings
from pathlib import Path

import torch

from snakechat.runtime.common import atomic_path, write_text_atomic
from snakechat.runtime.provenance import hash_file


class StateError(RuntimeError):
    pass


class StateStore:
    """Resumable states `state_{step:08d}.pt` in a directory; the newest `keep` are kept."""

    def __init__(self, directory, keep=2):
        self.directory, self.keep = Path(directory), keep

    def paths(self):
        return sorted(self.directory.glob("state_*.pt"))

    def save(self, state):
        path = self.directory / f"state_{state['step']:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
            sha256 = hash_file(tmp)
        write_text_atomic(checksum_path(path), f"{sha256}  {path.name}\n")
        for old in self.paths()[:-self.keep]:
            old.unlink()
            checksum_path(old).unlink(missing_ok=True)
        return path

    def clear(self):
        """Remove the directory once the stage's checkpoint is safely written: a later run with
        other settings then starts afresh instead of being refused."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def load_latest(self):
        """(path, state) of the newest verified, readable state, or None when there is none at all."""
        paths = self.paths()
        for path in reversed(paths):
            try:
                verify(path)
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or "step" not in state or "model" not in state:
                    raise ValueError("not a training state")
            except Exception as e:
                warnings.warn(f"skipping unreadable training state {path}: {e}")
                continue
            return path, state
        if paths:
            raise StateError(
                f"no readable training state in {self.directory} (tried {', '.join(p.name for p in paths)}); "
                f"refusing to start over from step 0. Delete the directory to train from scratch."
            )
        return None


def checksum_path(path):
    return path.with_name(path.name + ".sha256")


def verify(path):
    """Raise ValueError unless `path`'s sha256 is the one recorded beside it when it was written."""
    recorded = checksum_path(path)
    if not recorded.exists():
        raise ValueError(f"no recorded sha256 ({recorded.name} is missing), so it cannot be checked")
    expected = recorded.read_text().split()[0] if recorded.read_text().split() else ""
    actual = hash_file(path)
    if actual != expected:
        raise ValueError(f"corrupt: its sha256 is {actual}, {recorded.name} recorded {expected or 'nothing'}")


def check_identity(saved, current, path):
    """Refuse a state made under another identity, naming every difference."""
    diffs = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    diffs.update({k: (v, None) for k, v in saved.items() if k not in current})
    if diffs:
        listed = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise StateError(f"training state {path} was made with other settings ({listed}). Delete {Path(path).parent} to start over.")


def rng_state(device):
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
