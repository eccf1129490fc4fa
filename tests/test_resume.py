"""Runs that survive: SIGKILL at several moments then --resume, SIGTERM, bad resumes, non-finite losses, full disks.

Real tiny MinAtar runs through the CLI. Kills are injected from outside the product code: a small driver
wraps one function (a training update, a checkpoint file write, an evaluation) so that the process
SIGKILLs itself at a chosen moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch as th

from ewc_rl import checkpoints
from ewc_rl.cli import main
from ewc_rl.config import load_config
from tests.helpers import budget

STEPS = 1200
GAMES = "MinAtar/Breakout,MinAtar/SpaceInvaders"
# Two games of STEPS steps, checkpointed every 500: what train and compare are given.
TINY = [
    *budget(STEPS, "penalty.fisher_states=100", "eval.max_episode_steps=300", every=400, episodes=2, starts=200),
    "--checkpoint-every",
    "500",
]
ARGS = ["train", "--agent", "minatar-ewc", "--games", GAMES, *TINY, "--threads", "1"]

DRIVER = r"""
import os, signal, sys
from ewc_rl import agent, checkpoints, cli, trainer

mode, at = os.environ.get("KILL_MODE", ""), int(os.environ.get("KILL_AT", "0"))
count = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "update":  # during training, between checkpoints
    train = agent.ContinualDQN.train
    def killing_train(self, *a, **k):
        if self.num_timesteps >= at:
            die()
        return train(self, *a, **k)
    agent.ContinualDQN.train = killing_train
elif mode == "checkpoint":  # while the at-th checkpoint of this session is being written (state.pt done)
    write = checkpoints._write
    def killing_write(path, writer):
        if path.name == "meta.json":
            count[0] += 1
            if count[0] == at:
                die()
        return write(path, writer)
    checkpoints._write = killing_write
elif mode == "evaluation":  # in the middle of the at-th evaluation of this session
    evaluate = trainer.evaluate
    def killing_evaluate(*a, **k):
        count[0] += 1
        if count[0] == at:
            die()
        return evaluate(*a, **k)
    trainer.evaluate = killing_evaluate
sys.exit(cli.main(sys.argv[1:]))
"""


def _run(logdir: Path, *extra: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_MODE": kill[0] if kill else "", "KILL_AT": str(kill[1] if kill else 0)}
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *ARGS, "--logdir", str(logdir), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _latest_step(logdir: Path) -> int:
    return json.loads((checkpoints.latest_path(logdir) / "meta.json").read_text())["step"]


def _tag_steps(logdir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: dict[str, list[int]] = defaultdict(list)
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps[value.tag].append(event.step)
    return steps


def _snapshot(logdir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(logdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(logdir.rglob("*"))
        if p.is_file()
    }


def test_sigkill_at_several_moments_then_resume_completes_cleanly(tmp_path):
    logdir = tmp_path / "run"
    killed = _run(logdir, kill=("update", 700))
    assert killed.returncode == -signal.SIGKILL
    assert _latest_step(logdir) == 500  # the periodic checkpoint before the kill

    killed = _run(logdir, "--resume", kill=("checkpoint", 2))  # 1000 written, killed inside the boundary one
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _latest_step(logdir) == 1000
    assert any(p.name.endswith(".tmp") for p in (logdir / "checkpoints").iterdir())  # the torn write

    killed = _run(logdir, "--resume", kill=("evaluation", 2))  # boundary eval, checkpoints, then dies in game 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _latest_step(logdir) == 1500

    finished = _run(logdir, "--resume")
    assert finished.returncode == 0, finished.stderr
    summary = json.loads((logdir / "summary.json").read_text())
    assert summary["complete"] and len(summary["score_matrix"]) == 2 and None not in summary["score_matrix"][1]
    for game in summary["columns"]:
        steps = [e["step"] for e in summary["eval_history"] if e["game"] == game]
        assert steps == sorted(set(steps)), (game, steps)  # no evaluation repeated by a resume
    assert [e["step"] for e in summary["eval_history"] if e["game"] == "MinAtar/Breakout"] == [
        400,
        800,
        1200,
        1600,
        2000,
        2400,
    ]

    tags = _tag_steps(logdir)
    for tag in ("train/td_loss", "train/penalty", "eval/MinAtar/Breakout/return", "schedule/switch/text_summary"):
        assert tags[tag], tag
    for tag, steps in tags.items():
        assert all(b > a for a, b in zip(steps, steps[1:], strict=False)), (tag, steps)
    assert max(tags["eval/MinAtar/Breakout/return"]) == 2 * STEPS
    assert [p.name for p in (logdir / "checkpoints").iterdir() if p.name != "LATEST"] == [
        checkpoints.latest_path(logdir).name
    ]


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    logdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewc_rl", *ARGS, "--logdir", str(logdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while checkpoints.latest_path(logdir) is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint written. Resume with:" in err and "--resume" in err
    step = _latest_step(logdir)
    assert step > 500
    assert main([*ARGS, "--logdir", str(logdir), "--resume"]) == 0
    assert json.loads((logdir / "summary.json").read_text())["complete"]


@pytest.mark.parametrize("with_replay", [False, True])
def test_a_resume_records_the_replay_it_went_on_without(tmp_path, with_replay):
    """Mid-game, the checkpoint's replay memory holds the segment's steps so far (one environment, one memory per
    game): without --checkpoint-replay they are lost, said on stderr and in summary.json's ``resumes``."""
    logdir = tmp_path / "run"
    extra = ["--checkpoint-replay"] if with_replay else []
    assert _run(logdir, *extra, kill=("update", STEPS + 400)).returncode == -signal.SIGKILL
    meta = json.loads((checkpoints.latest_path(logdir) / "meta.json").read_text())
    assert meta["segment"] == 1 and meta["done_in_segment"] == meta["step"] - STEPS > 0
    resumed = _run(logdir, *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lost = 0 if with_replay else meta["done_in_segment"]
    summary = json.loads((logdir / "summary.json").read_text())
    assert [{k: r[k] for k in ("step", "replay_lost")} for r in summary["resumes"]] == [
        {"step": meta["step"], "replay_lost": lost}
    ]
    # the resumed session's code and CPU beside the first session's: here the same
    assert {k: summary["resumes"][0][k] for k in ("commit", "dirty", "cpu")} == summary["provenance"]
    assert ("without the" in resumed.stderr) == (not with_replay), resumed.stderr


def test_only_memories_the_rest_of_the_run_would_use_count_as_lost():
    from types import SimpleNamespace

    from ewc_rl.schedule import Segment
    from ewc_rl.trainer import Trainer

    def lost(meta, segment, done, inference="given", per_game=True):
        schedule = [Segment(i, g, 100, 0) for i, g in enumerate("ABA")]
        cfg = SimpleNamespace(agent=SimpleNamespace(task_inference=inference, per_game_replay=per_game))
        return Trainer._replay_lost(SimpleNamespace(schedule=schedule, cfg=cfg), meta, segment, done)  # type: ignore[arg-type]

    kept = {"replay_sizes": {"kept/A": 50, "kept/B": 70}}
    assert lost({"replay_sizes": {"current": 30}}, 1, 30) == 30
    assert lost(kept, 1, 0) == 120 and lost(kept, 2, 0) == 50  # B is not trained again
    assert lost(kept, 2, 0, inference="inferred") == 120  # any context may recur
    assert lost(kept, 3, 0) == 0  # nothing left to train
    assert lost({**kept, "with_replay": True}, 1, 0) == 0
    # an older checkpoint: whether a memory the rest of the run uses was lost, not how much
    assert lost({}, 1, 30) is None and lost({}, 1, 0) == 0
    assert lost({"kept_replays": ["A", "B"]}, 2, 0) is None and lost({"kept_replays": ["B"]}, 2, 0) == 0
    assert lost({}, 1, 0, per_game=False) is None and lost({}, 1, 0, inference="inferred") is None


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed during its second game, with checkpoints on disk."""
    logdir = tmp_path_factory.mktemp("interrupted") / "run"
    assert _run(logdir, kill=("update", STEPS + 100)).returncode == -signal.SIGKILL
    return logdir


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--set", "penalty.lambda=5"],
            "--resume with settings that differ from the saved run: penalty.lambda: "
            f"saved {load_config('minatar-ewc').penalty.lam}, now 5.0",
        ),
        (["--seed", "3"], "run.seed: saved 0, now 3"),
    ],
)
def test_resume_with_other_settings_is_refused(interrupted, capsys, extra, message):
    before = _snapshot(interrupted)
    assert main([*ARGS, "--logdir", str(interrupted), "--resume", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _snapshot(interrupted) == before


def test_resume_of_an_incompatible_checkpoint_is_refused(interrupted, capsys):
    meta_path = checkpoints.latest_path(interrupted) / "meta.json"
    original = meta_path.read_text()
    meta_path.write_text(original.replace('"format": 1', '"format": 7'))
    try:
        before = _snapshot(interrupted)
        assert main([*ARGS, "--logdir", str(interrupted), "--resume"]) == 2
        err = capsys.readouterr().err
        assert "has format version 7; this ewc_rl reads version 1" in err and err.count("\n") == 1
        assert _snapshot(interrupted) == before
    finally:
        meta_path.write_text(original)


def test_resume_of_a_tampered_checkpoint_runs_no_code(interrupted, tmp_path, capsys):
    ckpt = checkpoints.latest_path(interrupted)
    marker = tmp_path / "created-by-unpickling"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # a protocol-0 pickle calling os.system
    saved = {name: (ckpt / name).read_bytes() for name in ("state.pt", "meta.json")}
    try:
        (ckpt / "state.pt").write_bytes(payload)
        meta = json.loads(saved["meta.json"])
        meta["files"]["state.pt"] = hashlib.sha256(payload).hexdigest()  # the attacker fixes the checksum too
        (ckpt / "meta.json").write_text(json.dumps(meta))
        assert main([*ARGS, "--logdir", str(interrupted), "--resume"]) == 2
        err = capsys.readouterr().err
        assert "state.pt is not a tensors-only file" in err and err.count("\n") == 1 and "Traceback" not in err
        assert not marker.exists()
    finally:
        for name, data in saved.items():
            (ckpt / name).write_bytes(data)


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    assert main([*ARGS, "--logdir", str(tmp_path / "never-ran"), "--resume"]) == 2
    assert "has no checkpoint to resume from" in capsys.readouterr().err


def _poison_penalty(monkeypatch):
    from ewc_rl.penalty import Penalty

    real = Penalty.add_gradient

    def poisoned(self, params, value=True):
        result = real(self, params, value)
        return float("nan") if self.active else result

    monkeypatch.setattr(Penalty, "add_gradient", poisoned)


def test_non_finite_loss_stops_naming_step_and_checkpoint(tmp_path, monkeypatch, capsys):
    _poison_penalty(monkeypatch)
    logdir = tmp_path / "run"
    assert main([*ARGS, "--logdir", str(logdir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"non-finite loss at step {STEPS + 200 + 4}" in err  # game 2: warm-up 200, then an update
    assert f"last good checkpoint: step {STEPS}" in err and "--resume" in err


def test_non_finite_updates_can_be_skipped_and_counted(tmp_path, monkeypatch):
    _poison_penalty(monkeypatch)
    logdir = tmp_path / "run"
    assert main([*ARGS, "--logdir", str(logdir), "--set", "agent.on_nonfinite=skip"]) == 0
    skipped = _tag_steps(logdir)["train/skipped_updates"]
    assert skipped and min(skipped) > STEPS


def test_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    import errno

    real_write = checkpoints._write
    count = [0]

    def full_disk(path, writer):
        if path.name == "state.pt":
            count[0] += 1
            if count[0] == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, writer)

    monkeypatch.setattr(checkpoints, "_write", full_disk)
    logdir = tmp_path / "run"
    assert main([*ARGS, "--logdir", str(logdir)]) == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "is intact" in err and err.count("\n") == 0
    ckpt = checkpoints.load(logdir)
    assert ckpt.meta["step"] == 1000 and isinstance(ckpt.state["policy"], dict)
    assert all(th.isfinite(v).all() for v in ckpt.state["policy"].values())
    monkeypatch.setattr(checkpoints, "_write", real_write)
    assert main([*ARGS, "--logdir", str(logdir), "--resume"]) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_compare_checkpoints_every_worker_and_a_repeat_resumes(tmp_path, signum):
    logdir = tmp_path / "cmp"
    argv = [
        sys.executable,
        "-m",
        "ewc_rl",
        "compare",
        "--agents",
        "minatar-dqn",
        "minatar-ewc",
        "--seeds",
        "0",
        "--logdir",
        str(logdir),
        "--workers",
        "2",
        "--games",
        GAMES,
        *TINY,
    ]
    # Own session: only compare gets the SIGINT, so stopping the workers is compare's job.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    runs = [logdir / "minatar-dqn" / "seed-0", logdir / "minatar-ewc" / "seed-0"]
    deadline = time.time() + 120
    while not all(checkpoints.latest_path(r) for r in runs) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Run the same command again to resume them" in err

    def complete(run: Path) -> bool:
        return (run / "summary.json").exists() and json.loads((run / "summary.json").read_text()).get("complete")

    # On a loaded machine one worker can start so late that the other finishes before the signal; every run
    # still going then must have been stopped with a checkpoint (usually both).
    stopped = [r for r in runs if not complete(r)]
    assert stopped, "both runs finished before the signal: nothing was stopped"
    assert all("checkpoint written" in (logdir / "logs" / f"{r.parent.name}-seed-0.log").read_text() for r in stopped)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("resuming unfinished run") == len(stopped)
    assert all(complete(r) for r in runs)


def test_a_checkpoint_older_than_a_setting_resumes_while_that_setting_is_at_its_default(tmp_path):
    """Settings added after a checkpoint was written (here: task inference) are missing from its identity: at their
    defaults they change nothing and the resume goes on; set otherwise, it is refused."""
    from ewc_rl.errors import UsageError
    from ewc_rl.trainer import RunSpec, Trainer

    spec = RunSpec(games=["MinAtar/Breakout"], steps_per_game=10, logdir=tmp_path / "run")
    saved = Trainer(load_config("minatar-ewc"), spec).identity()
    older = {k: v for k, v in saved.items() if not k.startswith("recognition.") and k != "agent.task_inference"}
    Trainer(load_config("minatar-ewc"), spec)._check_identity(older)
    with pytest.raises(UsageError, match="agent.task_inference: saved None, now 'inferred'"):
        Trainer(load_config("minatar-ewc-inferred"), spec)._check_identity(older)
    assert not spec.logdir.exists()
