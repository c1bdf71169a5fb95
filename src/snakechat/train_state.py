"""Resumable training states: what a run saves so that a new process continues it exactly.

A state (`state_{step:08d}.pt`) holds the weights, the optimizers' moments, the recipe's position
(one per process), the RNGs, the counters and the identity it was made under. States are written
atomically; the newest two are kept, so a state that turns out unreadable falls back to the one
before it.
"""

import shutil
import warnings
from pathlib import Path

import torch

from snakechat.common import atomic_path


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
        for old in self.paths()[:-self.keep]:
            old.unlink()
        return path

    def clear(self):
        """Remove the directory once the stage's checkpoint is safely written: a later run with
        other settings then starts afresh instead of being refused."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def load_latest(self):
        """(path, state) of the newest readable state, or None when there is none at all."""
        paths = self.paths()
        for path in reversed(paths):
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
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
