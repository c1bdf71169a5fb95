"""Provenance's git state: tracked changes make a checkout dirty, untracked files do not."""

import subprocess

from snakechat.runtime.provenance import git_state


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True)


def test_untracked_files_do_not_make_the_checkout_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert git_state(tmp_path) == (commit, False)

    (tmp_path / "notes.txt").write_text("scratch\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "out.csv").write_text("a\n")
    assert git_state(tmp_path) == (commit, False)

    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, True)


def test_outside_git_there_is_no_state(tmp_path):
    assert git_state(tmp_path) == (None, None)
