"""Which code and which CPU made a run: written into summary.json so that reports can tell runs apart.

Package versions alone do not say which commit of this suite trained a run, and runs repeat bit for bit only on
the same code and CPU model: a study whose runs span days (and a change of last-bit arithmetic between them) needs
both recorded per run, not reconstructed from dates afterwards.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import ewc_rl

PACKAGES = ("ewc_rl", "torch", "stable-baselines3", "gymnasium", "ale-py", "minatar", "numpy", "tensorboard")
_SOURCE = Path(ewc_rl.__file__).resolve().parent.parent  # the checkout an editable install runs from


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what a run computes, and Python's."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


CODE = ("ewc_rl", "pyproject.toml")  # what decides a run's arithmetic; docs and agent files (recorded as settings) not
# git's own variables would point it at another repository or index than the one -C names (a pre-commit hook sets some)
_GIT_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def _git(*args: str) -> str | None:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV}
    # safe.directory: a checkout owned by another user (a container's bind mount) is still read, not refused;
    # --no-optional-locks: status must not take the index lock that the user's own git commands need.
    command = ["git", "-c", f"safe.directory={_SOURCE}", "--no-optional-locks", "-C", str(_SOURCE), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, errors="replace", timeout=10, check=False, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code() -> dict[str, str | bool | None]:
    """The suite's commit and whether its code (``CODE``'s tracked files) differs from it; both None when it does
    not run from a git checkout of its own (an installed wheel: its version says what it is)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != _SOURCE:  # not ours: a checkout that merely encloses site-packages
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
    return {"commit": _git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


@cache
def cpu() -> str:
    """The CPU model (Linux: /proc/cpuinfo's model name), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
