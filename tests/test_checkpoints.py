"""Checkpoint files: atomic replacement, integrity checks, safe loading, and the TensorBoard purge."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ewc_rl import checkpoints
from ewc_rl.checkpoints import CheckpointError, CheckpointWriteError


def _save(run, step, value=1.0, replays=None):
    state = {"w": torch.full((3,), value), "nested": {"b": torch.arange(4)}}
    return checkpoints.save(run, {"step": step}, state, replays)


def test_round_trip_and_only_the_latest_is_kept(tmp_path):
    _save(tmp_path, 10, 1.0)
    replay = {"current": {"observations": np.arange(12, dtype=np.uint8).reshape(3, 4), "position": np.array([3, 0])}}
    path = _save(tmp_path, 20, 2.0, replay)
    ckpt = checkpoints.load(tmp_path)
    assert ckpt.path == path and ckpt.meta["step"] == 20
    assert torch.equal(ckpt.state["w"], torch.full((3,), 2.0))
    assert np.array_equal(ckpt.replays["current"]["observations"], replay["current"]["observations"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [path.name]


def test_the_newest_complete_directory_wins_and_numbers_never_collide(tmp_path):
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    (tmp_path / "checkpoints" / ".ckpt-000002.tmp").mkdir()  # a write that never finished
    (tmp_path / "checkpoints" / "LATEST").write_text("ckpt-000000\n")  # a stale pointer of an older release
    assert checkpoints.latest_path(tmp_path) == newest
    assert checkpoints.load(tmp_path).meta["step"] == 20
    (tmp_path / "checkpoints" / "ckpt-000007").mkdir()  # half removed: no meta.json, not a checkpoint...
    assert checkpoints.latest_path(tmp_path) == newest
    assert _save(tmp_path, 30).name == "ckpt-000008"  # ... but its number is taken
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-000008"]


class _Kill(BaseException):
    """A simulated SIGKILL: not an OSError, so save() cannot clean up after it."""


def test_a_kill_after_any_step_of_a_save_leaves_a_resumable_run(tmp_path, monkeypatch):
    """Fault injection at every step of save(): after each file write (before its fsync), each fsync, each rename
    and each removal. Whatever step the kill follows, the run loads the newest complete checkpoint, and a further
    save works and becomes the one loaded."""
    replay = {"current": {"observations": np.arange(12, dtype=np.uint8).reshape(3, 4)}}
    state = {"w": torch.arange(3.0)}
    real = {"fsync": os.fsync, "rename": os.rename, "replace": os.replace, "unlink": os.unlink, "rmdir": os.rmdir}
    real_write = checkpoints._write

    def inject(kill_after: int | None) -> list[str]:
        """Patch every step to count itself and raise _Kill once ``kill_after`` steps have completed."""
        steps: list[str] = []

        def done(what: str) -> None:
            steps.append(what)
            if kill_after is not None and len(steps) == kill_after:
                raise _Kill(what)

        def wrap(name):
            def step(*args, **kwargs):
                result = real[name](*args, **kwargs)
                done(" ".join([name] + [Path(str(a)).name for a in args if not isinstance(a, int)]))
                return result

            return step

        for name in real:
            monkeypatch.setattr(os, name, wrap(name))
        monkeypatch.setattr(
            checkpoints,
            "_write",
            lambda path, writer: real_write(path, lambda f: (writer(f), done(f"write {path.name}"))),
        )
        return steps

    # A dry run counts the steps of a save that replaces an older checkpoint.
    (tmp_path / "count").mkdir()
    _save(tmp_path / "count", 10)
    steps = inject(None)
    _save(tmp_path / "count", 20, replays=replay)
    monkeypatch.undo()
    committed = next(i for i, s in enumerate(steps, 1) if s.startswith("rename") and " ckpt-" in s)
    assert len(steps) > 8 and any(s.startswith("fsync") for s in steps) and any(s.startswith("write") for s in steps)

    for k in range(len(steps) + 1):
        run = tmp_path / f"kill-after-{k}"
        run.mkdir()
        checkpoints.save(run, {"step": 10}, state)
        inject(k or None)
        if k:
            with pytest.raises(_Kill):
                checkpoints.save(run, {"step": 20}, {"w": torch.arange(3.0) + 1}, replay)
        monkeypatch.undo()
        ckpt = checkpoints.load(run)  # the resume
        want = 20 if k == 0 or k >= committed else 10  # k = 0: no kill at all
        if k == 0:
            continue
        assert ckpt.meta["step"] == want, f"killed after step {k} ({steps[k - 1]})"
        assert torch.equal(ckpt.state["w"], torch.arange(3.0) + (want == 20))
        # The resumed run writes its next checkpoint, which is then the one loaded, and the only one left.
        newest = checkpoints.save(run, {"step": 30}, state)
        assert checkpoints.load(run).meta["step"] == 30
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [newest.name], f"killed after step {k}"


def test_no_checkpoint_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="has no checkpoint to resume from"):
        checkpoints.load(tmp_path)


class _CreatesFile:
    """Unpickling this object would create a file: the payload of a malicious checkpoint."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
    path = _save(tmp_path, 10)
    marker = tmp_path / "pwned"
    (path / "state.pt").write_bytes(pickle.dumps({"w": _CreatesFile(str(marker))}))
    with pytest.raises(CheckpointError, match="does not match its recorded checksum"):
        checkpoints.load(tmp_path)
    # An attacker who also fixes the checksum still gets nothing executed: tensors-only unpickling.
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["state.pt"] = checkpoints._sha256(path / "state.pt")
    (path / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as printed, pytest.raises(CheckpointError) as err:
        warnings.simplefilter("always")
        checkpoints.load(tmp_path)
    message = str(err.value)
    assert "not a tensors-only file" in message and "\n" not in message
    # complete: torch's reason (today "Unsupported operand 149"), not the first 160 characters of its advice
    assert re.search(r"\(tensors-only unpickler: [^()]+\)$", message) and "Weights only load" not in message, message
    assert printed == []  # torch's warning about the pickle protocol is not printed before the refusal
    assert not marker.exists()


def test_truncated_and_garbled_files_are_one_line_errors(tmp_path):
    path = _save(tmp_path, 10)
    data = (path / "state.pt").read_bytes()
    (path / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match its recorded checksum"):
        checkpoints.load(tmp_path)
    (path / "meta.json").write_text('{"format": 1, "files": ')
    with pytest.raises(CheckpointError, match="meta.json cannot be read"):
        checkpoints.load(tmp_path)


def test_other_format_version_is_refused(tmp_path):
    path = _save(tmp_path, 10)
    meta = json.loads((path / "meta.json").read_text())
    meta["format"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99; this ewc_rl reads version 1"):
        checkpoints.load(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, code):
    first = _save(tmp_path, 10, 1.0)
    real_write = checkpoints._write

    def failing(path, writer):
        if path.name == "meta.json":
            raise OSError(code, os.strerror(code))
        return real_write(path, writer)

    monkeypatch.setattr(checkpoints, "_write", failing)
    with pytest.raises(CheckpointWriteError) as err:
        _save(tmp_path, 20, 2.0)
    assert os.strerror(code) in str(err.value) and "is intact" in str(err.value)
    ckpt = checkpoints.load(tmp_path)
    assert ckpt.path == first and torch.equal(ckpt.state["w"], torch.full((3,), 1.0))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name]


def test_rng_state_round_trip():
    import random

    meta, tensors = checkpoints.rng_state()
    meta = json.loads(json.dumps(meta))  # it is stored as JSON
    want = (np.random.rand(), random.random(), torch.rand(1).item())
    checkpoints.set_rng_state(meta, tensors)
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == want


def test_purge_drops_later_events_and_torn_records(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from torch.utils.tensorboard import SummaryWriter

    from ewc_rl.tblog import purge_events_after

    writer = SummaryWriter(str(tmp_path))
    for step in range(10):
        writer.add_scalar("x", float(step), step)
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00")  # a record cut short by a kill
    assert purge_events_after(tmp_path, 6) == 3
    steps = [e.step for e in EventFileLoader(str(path)).Load() if e.summary.value]
    assert steps == list(range(7))
    assert purge_events_after(tmp_path, 6) == 0  # idempotent
