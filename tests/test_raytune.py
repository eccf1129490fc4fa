"""compare --backend ray on a local Ray instance: same layout as the local backend, failed trials retried.

The failure is injected from outside the product: a ``sitecustomize`` module on PYTHONPATH makes the first
``ewc-rl train`` of one run exit right after writing its first checkpoint, so the retry must resume it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap

import pytest

from ewc_rl.cli import main
from tests.helpers import budget

pytest.importorskip("ray.tune")

ARGS = [
    "--agents",
    "minatar-dqn",
    "--seeds",
    "0",
    "1",
    "--games",
    "MinAtar/Breakout,MinAtar/Asterix",
    *budget(600, "eval.max_episode_steps=200", every=300, episodes=2),
    "--checkpoint-every",
    "200",
]

FAIL_ONCE = """
import os, sys
run, marker = os.environ.get("EWC_TEST_FAIL_ONCE_RUN"), os.environ.get("EWC_TEST_FAIL_ONCE_MARKER")
if run and "train" in sys.argv and run in sys.argv and not os.path.exists(marker):
    from ewc_rl import checkpoints
    save = checkpoints.save
    def save_then_die(*args, **kwargs):
        path = save(*args, **kwargs)
        open(marker, "w").close()
        os._exit(3)
    checkpoints.save = save_then_die
"""


def _structure(value: object) -> object:
    """Keys all the way down, values dropped: the shape of a JSON document."""
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_structure(v) for v in value[:1]]
    return type(value).__name__ if value is not None else "null"


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    inject = root / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(FAIL_ONCE))
    ray_dir, local_dir = root / "ray-cmp", root / "local-cmp"
    failing = ray_dir.resolve() / "minatar-dqn" / "seed-1"
    # Ray keeps its session (logs, sockets) in <temp>/ray after shutdown: give it a directory of its own, short
    # (its socket paths must stay under 108 characters, too few for pytest's tmp_path), and remove it afterwards.
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(inject))
        mp.setenv("EWC_TEST_FAIL_ONCE_RUN", str(failing))
        mp.setenv("EWC_TEST_FAIL_ONCE_MARKER", str(root / "failed-once"))
        mp.setenv("RAY_TMPDIR", ray_tmp)
        try:
            assert (
                main(
                    [
                        "compare",
                        *ARGS,
                        "--logdir",
                        str(ray_dir),
                        "--backend",
                        "ray",
                        "--cpus-per-run",
                        "1",
                        "--retries",
                        "1",
                    ]
                )
                == 0
            )
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert main(["compare", *ARGS, "--logdir", str(local_dir), "--workers", "2"]) == 0
    return ray_dir, local_dir, root / "failed-once"


def test_ray_backend_writes_the_local_backends_layout(both_backends):
    ray_dir, local_dir, _ = both_backends
    runs = {d: sorted(p.relative_to(d).as_posix() for p in d.glob("*/seed-*")) for d in (ray_dir, local_dir)}
    assert runs[ray_dir] == runs[local_dir] == ["minatar-dqn/seed-0", "minatar-dqn/seed-1"]
    for name in ("comparison.json", "comparison.md", "comparison.png", "compare.json"):
        assert (ray_dir / name).is_file(), name
    ray_cmp, local_cmp = (json.loads((d / "comparison.json").read_text()) for d in (ray_dir, local_dir))
    # the one difference: Ray's retried run resumed (see the next test), the local ones did not
    assert ray_cmp["agents"]["minatar-dqn"].pop("resumed_without_replay") == [1]
    assert local_cmp["agents"]["minatar-dqn"].pop("resumed_without_replay") == []
    assert _structure(ray_cmp) == _structure(local_cmp)
    for run in runs[ray_dir]:
        ray_summary, local_summary = (json.loads((d / run / "summary.json").read_text()) for d in (ray_dir, local_dir))
        assert ray_summary["complete"] and set(ray_summary) == set(local_summary)
        assert len(ray_summary["score_matrix"]) == 2


def test_a_failed_trial_is_retried_from_its_checkpoint(both_backends):
    ray_dir, _, marker = both_backends
    assert marker.exists()  # the injected failure happened
    log = (ray_dir / "logs" / "minatar-dqn-seed-1.log").read_text()
    attempts = [line for line in log.splitlines() if line.startswith("=== ray trial attempt")]
    assert len(attempts) == 2, log[-2000:]
    assert not attempts[0].endswith("--resume") and attempts[1].endswith("--resume")
    other = (ray_dir / "logs" / "minatar-dqn-seed-0.log").read_text()
    assert other.count("=== ray trial attempt") == 1
    summary = json.loads((ray_dir / "minatar-dqn" / "seed-1" / "summary.json").read_text())
    assert summary["complete"]
    # it died after its first checkpoint, 200 steps into the first game, which had stored 200 transitions
    assert [{k: r[k] for k in ("step", "replay_lost")} for r in summary["resumes"]] == [
        {"step": 200, "replay_lost": 200}
    ]


def test_ray_missing_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["compare", *ARGS, "--logdir", str(tmp_path / "cmp"), "--backend", "ray"]) == 2
    assert 'needs Ray Tune: pip install "ewc_rl[ray]"' in capsys.readouterr().err


def test_repeat_of_a_ray_comparison_skips_everything(both_backends, capsys):
    ray_dir, _, _ = both_backends
    assert main(["compare", *ARGS, "--logdir", str(ray_dir), "--backend", "ray"]) == 0
    assert "2 of 2 runs already finished: skipped" in capsys.readouterr().err
