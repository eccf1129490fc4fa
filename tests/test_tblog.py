from __future__ import annotations

import json

import pytest

from ewc_rl.tblog import package_versions, write_json


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "b": None})
    assert json.loads(path.read_text()) == {"a": 2, "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left behind


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_versions_name_the_stack():
    v = package_versions()
    assert {"torch", "stable-baselines3", "ale-py", "gymnasium", "python"} <= set(v)
