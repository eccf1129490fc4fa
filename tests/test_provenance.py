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
    (tmp_path / "ewc_rl").mkdir()
    (tmp_path / "ewc_rl" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    git(tmp_path, "add", "ewc_rl/a.py", "README.md")
    quiet = ("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=")
    git(tmp_path, *quiet, "commit", "-qm", "one")
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path.resolve())
    return tmp_path


def test_the_commit_and_whether_the_tracked_code_differs_from_it(repo):
    assert provenance.code() == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "ewc_rl" / "new.py").write_text("untracked files do not count\n")
    (repo / "README.md").write_text("a docs edit while runs go is not a code change\n")
    assert provenance.code()["dirty"] is False
    (repo / "ewc_rl" / "a.py").write_text("x = 2\n")
    assert provenance.code() == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": True}


def test_git_variables_of_the_caller_do_not_redirect_it(repo, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("other")
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert provenance.code()["commit"] == git(repo, "--git-dir", str(repo / ".git"), "rev-parse", "HEAD")


def test_a_checkout_that_merely_encloses_the_package_is_not_its_source(repo, monkeypatch):
    (repo / "site-packages").mkdir()
    monkeypatch.setattr(provenance, "_SOURCE", (repo / "site-packages").resolve())
    assert provenance.code() == {"commit": None, "dirty": None}


def test_outside_any_checkout_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path.resolve())
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.code() == {"commit": None, "dirty": None}


def test_the_cpu_is_named():
    assert provenance.cpu().strip()
