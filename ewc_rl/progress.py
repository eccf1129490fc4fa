"""A run's progress as a small file, ``<run>/steps.json`` = ``{"step": ..., "total": ...}``.

``ewc-rl compare`` runs each grid cell as its own ``ewc-rl train`` process; reading this file is how it
shows agent steps inside runs (TensorBoard's event files would do too, but parsing them every few seconds
costs far more than a two-number file). The file is replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from ewc_rl.tblog import write_json

FILENAME = "steps.json"  # not progress.json: stable-baselines3's json log has that name


class ProgressFile:
    """Writes a run's agent steps at most once every ``every`` seconds (and whenever forced)."""

    def __init__(self, logdir: Path, total: int, every: float = 2.0) -> None:
        self.path, self.total, self.every = logdir / FILENAME, total, every
        self.next_write = 0.0

    def update(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self.next_write:
            self.next_write = now + self.every
            with contextlib.suppress(OSError):  # only a display depends on it: never stop a run for it
                write_json(self.path, {"step": int(step), "total": int(self.total)}, durable=False)


def read_progress(logdir: Path) -> tuple[int, int] | None:
    """(step, total) of the run in ``logdir``, or None before its first write (or if the file is unreadable)."""
    try:
        data = json.loads((logdir / FILENAME).read_text())
        return int(data["step"]), int(data["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
