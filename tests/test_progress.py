"""The progress file a run writes for `ewc-rl compare`: atomic, throttled, forced at the end, unreadable -> None."""

from __future__ import annotations

import json

from ewc_rl.progress import FILENAME, ProgressFile, read_progress


def test_writes_at_once_then_at_most_every_interval_unless_forced(tmp_path):
    progress = ProgressFile(tmp_path, total=100, every=3600.0)
    assert read_progress(tmp_path) is None
    progress.update(5)
    assert read_progress(tmp_path) == (5, 100)
    progress.update(50)  # within the interval: not written
    assert read_progress(tmp_path) == (5, 100)
    progress.update(100, force=True)
    assert read_progress(tmp_path) == (100, 100)
    assert json.loads((tmp_path / FILENAME).read_text()) == {"step": 100, "total": 100}
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]  # no temporary file left behind


def test_a_damaged_file_reads_as_no_progress_and_an_unwritable_one_is_skipped(tmp_path):
    (tmp_path / FILENAME).write_text('{"step": ')
    assert read_progress(tmp_path) is None
    ProgressFile(tmp_path / "missing", total=10).update(1)  # no such directory: the run goes on
    assert not (tmp_path / "missing").exists()
