"""What summary.json records of the code and CPU: checked against git itself on a repository made for the test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ewc_rl import provenance


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git checkout holding one committed file, standing in for the suite's own checkout."""
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path.resolve())
    return tmp_path


def test_the_commit_and_whether_tracked_files_differ_from_it(repo):
    assert provenance.code() == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "notes.txt").write_text("untracked files do not count\n")
    assert provenance.code()["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code() == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": True}


def test_a_checkout_that_merely_encloses_the_package_is_not_its_source(repo, monkeypatch):
    (repo / "site-packages").mkdir()
    monkeypatch.setattr(provenance, "_SOURCE", (repo / "site-packages").resolve())
    assert provenance.code() == {"commit": None, "dirty": None}


def test_outside_any_checkout_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path.resolve())
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.code() == {"commit": None, "dirty": None}


def test_the_cpu_and_the_stack_are_named():
    assert provenance.cpu()
    assert {"torch", "stable-baselines3", "ale-py", "gymnasium", "minatar", "python"} <= set(
        provenance.package_versions()
    )
