"""Checkpoint files: atomic replacement, integrity checks, safe loading, and the TensorBoard purge."""

from __future__ import annotations

import errno
import json
import os
import pickle

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
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", path.name]


def test_missing_pointer_falls_back_to_newest_complete_directory(tmp_path):
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    (tmp_path / "checkpoints" / "LATEST").unlink()
    (tmp_path / "checkpoints" / ".ckpt-000002.tmp").mkdir()  # a write that never finished
    assert checkpoints.latest_path(tmp_path) == newest
    assert checkpoints.load(tmp_path).meta["step"] == 20


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
    with pytest.raises(CheckpointError) as err:
        checkpoints.load(tmp_path)
    assert "not a tensors-only file" in str(err.value) and "\n" not in str(err.value)
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
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", first.name]


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
