"""Command line: ``ewc-rl train ...`` (also ``python -m ewc_rl``).

Parsing and error reporting only: a mistake the user can fix is one line on stderr and exit code 2,
with nothing written; a run that has to stop (full disk, non-finite loss) is one line and exit code 1;
an interrupted run says how to resume it and exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ewc_rl.errors import RunError, UsageError

if TYPE_CHECKING:
    from ewc_rl.grid import GridSpec
    from ewc_rl.schedule import Budget


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (exit code 2) instead of a usage block plus a line."""

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's is NoReturn; exit() raises
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _budget_list(text: str) -> list[int]:
    """--steps-per-game: one positive integer, or a comma-separated one per game."""
    return [_positive_int(part.strip()) for part in text.split(",")]


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _seed(text: str) -> int:
    """A seed numpy can take (stable-baselines3 seeds numpy's global generator with it)."""
    value = _nonnegative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"seeds go up to 2**32 - 1 = {2**32 - 1}, got {value}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``."""
    p.add_argument(
        "--games",
        required=True,
        metavar="G1,G2,...|randomN",
        help="comma-separated game names in training order (ALE names such as Pong,Breakout, or "
        "MinAtar/Breakout,...), or randomN: N games drawn from --pool",
    )
    p.add_argument(
        "--pool",
        default=None,
        metavar="NAME",
        help="game pool for --games randomN (default: the agent file's schedule.pool); "
        "pools: kirkpatrick2017 (the EWC paper's 19 games)",
    )
    p.add_argument(
        "--steps-per-game",
        type=_budget_list,
        default=[1_000_000],
        metavar="N|N1,N2,...",
        help="agent steps (= 4 frames each) per game visit, or one number per game of --games for games that need "
        "different budgets (default: 1000000)",
    )
    p.add_argument(
        "--cycles",
        type=_positive_int,
        default=1,
        metavar="N",
        help="repeat the whole sequence N times: revisits (default: 1)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting of the agent file, e.g. --set penalty.lambda=1000 (repeatable)",
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="evaluate all games seen so far every N agent steps (default: the agent's eval.every)",
    )
    p.add_argument(
        "--eval-episodes",
        type=_positive_int,
        default=None,
        metavar="K",
        help="episodes per game and evaluation (default: the agent's eval.episodes)",
    )
    p.add_argument(
        "--eval-all-games",
        action="store_true",
        help="evaluate every game of the schedule, not only those seen so far (zero-shot transfer; "
        "also the agent file's eval.all_games)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto picks CUDA when available (default: auto)",
    )


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-every",
        type=_nonnegative_int,
        default=100_000,
        metavar="N",
        help="also checkpoint every N agent steps, beside every game boundary; 0 = boundaries only (default: 100000)",
    )
    p.add_argument(
        "--checkpoint-replay",
        action="store_true",
        help="include the replay memories in checkpoints (large: about 56 KB per Atari transition)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set values plus the --eval-* shortcuts, as agent-file overrides."""
    from ewc_rl.config import eval_overrides

    return [*args.overrides, *eval_overrides(args.eval_every, args.eval_episodes)]


def _resolve_games(
    args: argparse.Namespace, cfg: object, schedule_seed: int
) -> tuple[list[str], list[list[str]] | None, str | None]:
    """(games in first-visit order, per-cycle visiting orders or None, pool) from --games / --pool."""
    from ewc_rl.envs import parse_games
    from ewc_rl.schedule import draw, random_count

    n = random_count(args.games)
    if n is None:
        if args.pool is not None:
            raise UsageError("--pool applies only to --games randomN")
        return parse_games(args.games), None, None
    pool = args.pool or cfg.schedule.pool  # type: ignore[attr-defined]  # cfg: a Config, typed loosely here
    if not pool:
        raise UsageError(f"--games {args.games} needs --pool NAME (or schedule.pool in the agent file)")
    orders = draw(pool, n, args.cycles, schedule_seed)
    return parse_games(",".join(orders[0])), orders, pool


def _budget(args: argparse.Namespace, games: list[str], orders: list[list[str]] | None) -> Budget:
    """--steps-per-game for the resolved games (one budget per game only where the games are named)."""
    if orders is not None and len(args.steps_per_game) > 1:
        raise UsageError(f"--games {args.games} takes one --steps-per-game: the games are not known before the draw")
    from ewc_rl.schedule import budget_for

    return budget_for(games, args.steps_per_game)


def _unique(values: list, option: str) -> list:
    """``values`` without repeats, with a one-line note when there were some (two jobs must never share a run)."""
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        repeated = ", ".join(str(v) for v in unique if values.count(v) > 1)
        print(f"ewc-rl: note: {option} repeats {repeated}; each is run once", file=sys.stderr)
    return unique


def _note_revisits(games: list[str], orders: list[list[str]] | None) -> None:
    """A game named twice in --games is a revisit (meant or not): say so in a line."""
    repeated = [g for g in dict.fromkeys(games) if games.count(g) > 1] if orders is None else []
    if repeated:
        print(
            f"ewc-rl: note: --games names {', '.join(repeated)} more than once: each later visit is a revisit "
            "(same score-matrix column, its anchor replaced); --cycles N repeats the whole sequence instead",
            file=sys.stderr,
        )


def _check_device(device: str) -> None:
    import torch as th

    if device == "cuda" and not th.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device auto or cpu)")


def _agents_by_suite() -> str:
    """The shipped agent files, Atari and MinAtar apart (a MinAtar agent file's name starts with minatar)."""
    from ewc_rl.config import available_agents

    names = available_agents()
    atari = [n for n in names if not n.startswith("minatar")]
    return f"Atari: {', '.join(atari)}; MinAtar: {', '.join(n for n in names if n not in atari)}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ewc-rl",
        description="Continual reinforcement learning on Atari: sequential DQN with Elastic Weight Consolidation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train one agent on a sequence of games",
        description="Train one agent on a sequence of games, consolidating after each game, and chart it "
        "in TensorBoard.",
        epilog="example: ewc-rl train --agent ewc --games Pong,Breakout --steps-per-game 1000000 --seed 0",
    )
    train.add_argument(
        "--agent",
        default="ewc",
        metavar="NAME|PATH",
        help=f"an agent of agents/ ({_agents_by_suite()}) or a TOML file (default: ewc)",
    )
    _add_run_options(train)
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument(
        "--schedule-seed",
        type=_nonnegative_int,
        default=None,
        metavar="S",
        help="seed of the --games randomN draw (default: --seed)",
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (games, order, steps, evaluation cost, replay memory) and exit",
    )
    train.add_argument(
        "--logdir", type=Path, default=None, help="run directory, must be new or empty (default: runs/<agent>-<time>)"
    )
    train.add_argument(
        "--threads",
        type=_nonnegative_int,
        default=0,
        metavar="N",
        help="torch threads, 0 = torch's default (default: 0)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_checkpoint_options(train)
    train.add_argument(
        "--log-formats",
        default="",
        metavar="csv,json",
        help="stable-baselines3's csv and/or json scalar logs (progress.csv, progress.json) beside "
        "TensorBoard's; a --resume starts them anew",
    )
    train.add_argument(
        "--track",
        choices=("wandb", "mlflow"),
        default=None,
        help="also log to Weights & Biases (offline unless WANDB_MODE=online) or MLflow "
        '(<logdir>/mlruns unless MLFLOW_TRACKING_URI is set); pip install "ewc_rl[track]"',
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --logdir from its latest checkpoint (same settings required)",
    )

    compare = sub.add_parser(
        "compare",
        help="train a grid of agents x settings x seeds on the same sequence, then report",
        description="Run every (agent, --grid setting, seed) exactly as `ewc-rl train` would, in "
        "<logdir>/<agent>[+key=value...]/seed-<s>/, in local worker processes or as Ray Tune trials; "
        "finished runs are skipped and unfinished ones resumed when repeated. Then write "
        "comparison.md/.json/.png, with the runs ranked by average performance.",
        epilog="examples: ewc-rl compare --agents dqn ewc --seeds 0 1 2 --games Pong,Breakout "
        "--steps-per-game 1000000 --logdir runs/cmp;  "
        "ewc-rl compare --agents ewc --grid penalty.lambda=100,1000,10000 --seeds 0 1 ... (a sweep)",
    )
    compare.add_argument(
        "--agents", nargs="+", default=["dqn", "ewc"], metavar="AGENT", help="agents to compare (default: dqn ewc)"
    )
    compare.add_argument("--seeds", nargs="+", type=_seed, default=[0], metavar="S", help="seeds (default: 0)")
    compare.add_argument(
        "--schedule-seed",
        type=_nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the --games randomN draw, shared by every run (default: 0)",
    )
    _add_run_options(compare)
    compare.add_argument("--logdir", type=Path, required=True, help="comparison directory")
    compare.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2,...",
        help="run every agent once per value of this setting (repeatable: values are crossed), "
        "e.g. --grid penalty.lambda=100,1000",
    )
    compare.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        metavar="W",
        help="local backend: runs at once; torch threads are divided between them (default: 2)",
    )
    compare.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="local backend: torch threads per run (default: the cores divided between the runs at once; "
        "say 1 when other jobs share the machine)",
    )
    compare.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local worker processes, or one Ray Tune trial per run (default: local)",
    )
    compare.add_argument(
        "--address",
        default=None,
        metavar="auto|HOST:PORT",
        help="ray backend: the cluster to join (default: start a local Ray instance)",
    )
    compare.add_argument(
        "--cpus-per-run",
        type=_positive_int,
        default=1,
        metavar="N",
        help="ray backend: CPUs (and torch threads) per run (default: 1)",
    )
    compare.add_argument(
        "--gpus-per-run",
        type=_nonnegative_float,
        default=0.0,
        metavar="F",
        help="ray backend: GPUs per run, fractions allowed (default: 0)",
    )
    compare.add_argument(
        "--retries",
        type=_nonnegative_int,
        default=2,
        metavar="N",
        help="ray backend: retry a failed run up to N times, from its checkpoint (default: 2)",
    )
    compare.add_argument(
        "--fresh-references",
        nargs="?",
        const="",
        default=None,
        metavar="AGENT",
        help="also train a fresh network on each game alone, once per game and seed (same steps, --set and seeds), "
        "in <logdir>/fresh/<game>/seed-<s>/: the report's plasticity and forward transfer divide by and subtract "
        "them. AGENT: whose agent file they use (default: the first --agents; name one when the agents' networks "
        "or [dqn] settings differ). Added to a finished comparison, it runs only these",
    )
    compare.add_argument(
        "--dry-run", action="store_true", help="list the runs (finished, to resume, to start); train and write nothing"
    )
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_checkpoint_options(compare)

    rand = sub.add_parser(
        "random-scores",
        help="measure a uniformly random policy's score per game (normalisation baselines)",
        description="Play each game with uniformly random actions (the evaluator with epsilon = 1) and print "
        "the mean return with its 95% interval over all episodes.",
    )
    rand.add_argument("--games", required=True, metavar="G1,G2,...")
    rand.add_argument(
        "--agent",
        default=None,
        metavar="NAME|PATH",
        help="agent file whose [env] settings and eval.max_episode_steps to play with "
        "(default: dqn for ALE games, minatar-dqn for MinAtar games)",
    )
    rand.add_argument("--episodes", type=_positive_int, default=100, metavar="K", help="episodes per seed")
    rand.add_argument("--seeds", nargs="+", type=_seed, default=[0], metavar="S")
    rand.add_argument(
        "--max-episode-steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="episode cap in agent steps (default: the agent's eval.max_episode_steps)",
    )

    bench = sub.add_parser(
        "bench",
        help="measure throughput, replay memory, Fisher and evaluation cost on real ALE",
        description="Side by side on real ALE with the Nature CNN (train_freq 4, batch 32, 18 actions): ewc_rl's "
        "DQN with and without an EWC penalty of 10 anchors, with each continual method, and a second time as "
        "an A/A control (its distance from 1: a lower bound on the noise of the run's ratios), stock "
        "stable-baselines3 DQN, and a bare torch loop, timed in interleaved rounds; the frame replay's bytes per "
        "transition; the per-sample Fisher's speed; the evaluation's share of wall time. Prints a markdown table "
        "(docs/performance.md).",
    )
    bench.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="size",
        default="full",
        help="short measurements: about 3 minutes on 2 CPU cores (the full run: about 10)",
    )
    bench.add_argument(
        "--size",
        choices=("tiny", "quick", "full"),
        default="full",
        help="measurement lengths; tiny only checks that everything runs (default: full)",
    )
    bench.add_argument(
        "--agent",
        default="dqn",
        metavar="NAME|PATH",
        help="agent file whose settings (n_envs, replay, learning rate, eval) ewc_rl uses (default: dqn)",
    )
    bench.add_argument("--game", default="Breakout", help="ALE game (default: Breakout)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    bench.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="N",
        help="repeat the whole measurement N times and report each key's median, min and max "
        "(the machine's speed drifts by tens of percent; default: 1)",
    )
    bench.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the figures as JSON (after every repeat, so an interruption keeps the finished ones)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")

    insp = sub.add_parser(
        "inspect-fisher",
        help="the policy Fisher of a trained agent, per layer and temperature",
        description="Rebuild the agent of RUN's latest checkpoint and report, on states of a game's replay memory, "
        "the Q-value gaps between actions, and for each tau the policy's entropy and the Fisher's mean "
        "per parameter tensor. The checkpoint must hold the replay: train with --checkpoint-replay "
        "--set agent.keep_replay=true.",
    )
    insp.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    insp.add_argument("--game", default=None, help="whose replay states to use (default: the latest game)")
    insp.add_argument(
        "--tau",
        type=float,
        nargs="+",
        default=[1.0, 0.1, 0.03, 0.01],
        metavar="T",
        help="temperatures of pi = softmax(Q / tau) (default: 1 0.1 0.03 0.01)",
    )
    insp.add_argument("--states", type=_positive_int, default=2_000, metavar="N", help="replay states (default: 2000)")
    insp.add_argument(
        "--estimator",
        default="sampled",
        metavar="NAME",
        help="the Fisher estimator: sampled, exact, empirical (squared TD-loss gradients, the same "
        "for every tau) or mas (absolute gradients of ||Q||^2, idem) (default: sampled)",
    )

    toy = sub.add_parser(
        "toy",
        help="the EWC paper's supervised check: permuted digits, SGD vs L2 vs EWC, in about a minute",
        description="Train a small MLP on K pixel-permuted versions of the 8x8 digits in sequence, once per method "
        "and seed, with the suite's Fisher and penalty; evaluate every task over training and write "
        "<logdir>/<method>/seed-<s>/ (summary.json, TensorBoard) and comparison.md/.json/.png.",
        epilog="example: ewc-rl toy --tasks 5 --methods sgd l2 ewc --lambda ewc=0.05 --seeds 0 1 2 3 4",
    )
    toy.add_argument("--tasks", type=_positive_int, default=5, metavar="K", help="permutations (default: 5)")
    toy.add_argument(
        "--methods",
        nargs="+",
        default=["sgd", "l2", "ewc"],
        metavar="M",
        help="sgd, l2, ewc, online-ewc (default: sgd l2 ewc)",
    )
    toy.add_argument(
        "--lambda",
        dest="lambdas",
        action="append",
        default=[],
        metavar="[METHOD=]V",
        help="penalty strength, for all methods or METHOD (repeatable; default: 0.02 for each)",
    )
    toy.add_argument(
        "--seeds", nargs="+", type=_seed, default=[0, 1, 2, 3, 4], metavar="S", help="(default: 0 1 2 3 4)"
    )
    toy.add_argument(
        "--steps-per-task",
        type=_positive_int,
        default=250,
        metavar="N",
        help="SGD steps (batch 32) per task (default: 250)",
    )
    toy.add_argument("--lr", type=float, default=0.2, help="SGD learning rate (default: 0.2)")
    toy.add_argument("--hidden", type=_positive_int, default=100, metavar="H", help="units per layer (default: 100)")
    toy.add_argument(
        "--eval-every",
        type=_positive_int,
        default=25,
        metavar="N",
        help="test every task trained so far every N steps (default: 25)",
    )
    toy.add_argument("--fisher", default="exact", metavar="exact|sampled", help="estimator (default: exact)")
    toy.add_argument("--decay", type=float, default=1.0, help="online-ewc's Fisher decay (default: 1)")
    toy.add_argument("--logdir", type=Path, default=None, help="new or empty directory (default: runs/toy-<time>)")
    toy.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="torch threads (default: 1)")

    ev = sub.add_parser(
        "evaluate",
        help="play a run's latest learner on games: returns with 95%% intervals, and videos",
        description="Rebuild the learner of RUN's latest checkpoint (a finished or a running run) and play EPISODES "
        "episodes of each game epsilon-greedily, as the run's evaluator does; print the mean return "
        "with its 95% interval. --video also records one episode per game (what the agent sees: "
        "MinAtar's planes in colour, Atari's 84x84 frames) into RUN/videos/<game>.gif or .mp4.",
        epilog="example: ewc-rl evaluate runs/demo/minatar-ewc/seed-0 --episodes 30 --video",
    )
    ev.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    ev.add_argument(
        "--games",
        default=None,
        metavar="G1,G2,...",
        help="games to play, of the run's suite (default: the run's games)",
    )
    ev.add_argument("--episodes", type=_positive_int, default=10, metavar="K", help="episodes per game (default: 10)")
    ev.add_argument(
        "--epsilon",
        type=_nonnegative_float,
        default=None,
        metavar="E",
        help="exploration rate (default: the run's eval.epsilon; 0 = greedy)",
    )
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--video", action="store_true", help="record one episode per game")
    ev.add_argument("--video-dir", type=Path, default=None, metavar="DIR", help="where (default: RUN/videos)")
    ev.add_argument(
        "--video-format",
        choices=("gif", "mp4"),
        default="gif",
        help='gif (Pillow) or mp4 (needs pip install "ewc_rl[video]") (default: gif)',
    )

    report = sub.add_parser(
        "report",
        help="(re)write comparison.md/.json/.png from a comparison's summary.json files",
        description="Aggregate the finished runs under LOGDIR (<agent>/seed-<s>/summary.json) into "
        "comparison.json, comparison.md and comparison.png.",
    )
    report.add_argument("logdir", type=Path, metavar="LOGDIR")
    report.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="directories of single-game runs (any depth; by game and seed; only runs as long as the comparison's "
        "segments of their game) for forward transfer and plasticity "
        "(default: LOGDIR/fresh, written by compare --fresh-references, when it exists)",
    )
    report.add_argument(
        "--target",
        metavar="BASELINE",
        help="also say which agents meet the study's target (docs/metrics.md): every earlier game kept to "
        "--min-retention, every game learned to --min-plasticity of a fresh network, and average performance above "
        "BASELINE's (an agent of the comparison) with non-overlapping 95%% intervals; needs fresh references",
    )
    report.add_argument(
        "--min-retention", type=float, metavar="X", help="with --target: per earlier game (default: 0.7)"
    )
    report.add_argument("--min-plasticity", type=float, metavar="X", help="with --target: per game (default: 0.8)")
    pool = sub.add_parser(
        "pool",
        help="one table over several comparisons (e.g. development sequences): metrics over every sequence and seed",
        description="Pool the comparison.json of each DIR (written by compare or report): per agent present in "
        "every DIR, average performance, retention, mean plasticity and mean forgetting as mean ± 95% interval "
        "over all (comparison, seed) pairs. Writes pooled.md, pooled.json and (when some agent has plasticity) "
        "tradeoff.png into --out.",
    )
    pool.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="comparison directories")
    pool.add_argument("--out", type=Path, required=True, metavar="OUT", help="directory for the pooled files")
    return parser


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    # Heavy imports only once arguments are known to be valid, so `--help` and errors are instant.
    import torch as th

    from ewc_rl import networks
    from ewc_rl.config import load_config
    from ewc_rl.envs import suite
    from ewc_rl.plan import describe, warnings
    from ewc_rl.report import format_metrics, format_score_matrix
    from ewc_rl.schedule import make_schedule
    from ewc_rl.tblog import check_writable, is_complete
    from ewc_rl.trainer import Interrupted, RunSpec, Trainer

    cfg = load_config(args.agent, _overrides(args))
    schedule_seed = args.seed if args.schedule_seed is None else args.schedule_seed
    games, orders, pool = _resolve_games(args, cfg, schedule_seed)
    networks.resolve(cfg.agent.network, suite(games[0]))
    budget = _budget(args, games, orders)
    _note_revisits(games, orders)
    schedule = make_schedule(games, budget, args.cycles, orders)
    if args.dry_run:
        print(
            describe(cfg, schedule, seed=args.seed, pool=pool, eval_all_games=args.eval_all_games or cfg.eval.all_games)
        )
        return 0
    _check_device(args.device)
    for warning in warnings(cfg, schedule):
        print(f"ewc-rl: warning: {warning}", file=sys.stderr)
    logdir: Path = args.logdir or Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if args.resume:
        if args.logdir is None:
            raise UsageError("--resume needs the --logdir of the run to continue")
        if is_complete(logdir):
            print(f"ewc-rl: {logdir} holds a complete run: nothing to resume", file=sys.stderr)
            return 0
    elif logdir.exists() and (not logdir.is_dir() or any(logdir.iterdir())):
        raise UsageError(
            f"--logdir {logdir} already holds files; use --resume to continue the run there, or choose a new directory"
        )
    check_writable(logdir)
    if args.threads:
        th.set_num_threads(args.threads)

    formats = [f.strip() for f in args.log_formats.split(",") if f.strip()]
    if any(f not in ("tensorboard", "csv", "json") for f in formats):
        raise UsageError(f"--log-formats takes csv and json (TensorBoard is always written); got {args.log_formats!r}")
    if args.track:
        import importlib.util

        if importlib.util.find_spec(args.track) is None:
            raise UsageError(f'--track {args.track} needs the {args.track} package: pip install "ewc_rl[track]"')
    command = ["ewc-rl", *argv]
    spec = RunSpec(
        games=games,
        orders=orders,
        steps_per_game=budget,
        logdir=logdir,
        cycles=args.cycles,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        eval_all_games=args.eval_all_games or cfg.eval.all_games,
        checkpoint_every=args.checkpoint_every,
        checkpoint_replay=args.checkpoint_replay,
        command=command,
        log_formats=formats,
        track=args.track,
    )
    try:
        summary = Trainer(cfg, spec).run(resume=args.resume)
    except Interrupted as exc:
        again = " ".join(command + ([] if args.resume else ["--resume"]))
        if args.logdir is None:
            again += f" --logdir {logdir}"
        print(f"ewc-rl: {exc}; checkpoint written. Resume with:\n  {again}", file=sys.stderr)
        return 128 + exc.signum
    print(f"\nmean evaluation return after each segment ({cfg.name}, seed {args.seed}):")
    print(format_score_matrix(summary))
    print()
    print(format_metrics(summary))
    print(f"\nlogs and summary.json: {logdir}")
    print(f"open them with: tensorboard --logdir {logdir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ewc_rl import networks
    from ewc_rl.config import load_config
    from ewc_rl.envs import suite
    from ewc_rl.grid import GridSpec, parse_grid, run_grid
    from ewc_rl.report import write_report
    from ewc_rl.tblog import check_writable

    grid = parse_grid(args.grid)
    args.agents, args.seeds = _unique(args.agents, "--agents"), _unique(args.seeds, "--seeds")
    probe = GridSpec(agents=list(args.agents), seeds=[0], games=[], steps_per_game=1, grid=grid)
    probe.cells()  # two agents that would share a run directory are refused
    for agent in args.agents:  # every agent file, override, grid value and game checked before anything starts
        for variant in probe.variants():
            cfg = load_config(agent, _overrides(args) + [f"{k}={v}" for k, v in variant])
        games, orders, pool = _resolve_games(args, cfg, args.schedule_seed)
        networks.resolve(cfg.agent.network, suite(games[0]))
    budget = _budget(args, games, orders)
    _note_revisits(games, orders)
    fresh = _fresh_agent(args, games)
    if args.backend == "ray" and args.threads is not None:
        raise UsageError("--threads is for the local backend; the ray backend's runs take --cpus-per-run threads")
    if not args.dry_run:
        _check_device(args.device)
        check_writable(args.logdir)
    random_draw = orders is not None
    spec = GridSpec(
        agents=list(args.agents),
        seeds=list(args.seeds),
        games=[args.games.strip()] if random_draw else games,
        pool=pool,
        schedule_seed=args.schedule_seed if random_draw else None,
        steps_per_game=budget,
        cycles=args.cycles,
        overrides=list(args.overrides),
        grid=grid,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_all_games=args.eval_all_games,
        checkpoint_every=args.checkpoint_every,
        checkpoint_replay=args.checkpoint_replay,
        fresh_references=fresh,
        fresh_games=list(dict.fromkeys(games)) if fresh is not None else [],
    )
    if args.dry_run:
        return _list_runs(spec, args.logdir)
    try:
        if args.backend == "ray":
            from ewc_rl.raytune import run_grid_ray

            failed = run_grid_ray(
                spec,
                args.logdir,
                address=args.address,
                cpus_per_run=args.cpus_per_run,
                gpus_per_run=args.gpus_per_run,
                retries=args.retries,
                device=args.device,
                progress=not args.no_progress,
            )
        else:
            failed = run_grid(
                spec,
                args.logdir,
                workers=args.workers,
                device=args.device,
                progress=not args.no_progress,
                threads=args.threads,
            )
    except KeyboardInterrupt as stop:
        print(
            "ewc-rl: interrupted; unfinished runs wrote checkpoints. Run the same command again to resume them.",
            file=sys.stderr,
        )
        return 128 + getattr(stop, "signum", signal.SIGINT)
    paths = write_report(args.logdir)
    print(paths["md"].read_text())
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    print(f"overlay all runs in TensorBoard: tensorboard --logdir {args.logdir}")
    if failed:
        print(f"ewc-rl: {failed} run(s) failed; their logs are in {args.logdir / 'logs'}", file=sys.stderr)
        return 1
    return 0


def _fresh_agent(args: argparse.Namespace, games: list[str]) -> str | None:
    """The agent file of --fresh-references' runs, checked like the others; a note when the agents would disagree."""
    from ewc_rl import networks
    from ewc_rl.config import Config, load_config
    from ewc_rl.envs import suite

    if args.fresh_references is None:
        return None
    agent = args.fresh_references or args.agents[0]
    cfg = load_config(agent, _overrides(args))
    networks.resolve(cfg.agent.network, suite(games[0]))
    if not args.fresh_references:  # not named: say so when another agent would train a different fresh network

        def learner(c: Config) -> dict:
            return {k: v for k, v in c.to_dict().items() if k in ("agent", "dqn")}

        differ = [a for a in args.agents[1:] if learner(load_config(a, _overrides(args))) != learner(cfg)]
        if differ:
            print(
                f"ewc-rl: note: the fresh references use {agent}'s settings; {', '.join(differ)} "
                f"{'differs' if len(differ) == 1 else 'differ'} in [agent] or "
                "[dqn]: name the agent to use with --fresh-references AGENT",
                file=sys.stderr,
            )
    return agent


def _list_runs(spec: GridSpec, logdir: Path) -> int:
    """compare --dry-run: every run of the grid and what a real invocation would do with it; nothing is written."""
    from ewc_rl.checkpoints import latest_path
    from ewc_rl.grid import check_finished, check_spec
    from ewc_rl.tblog import is_complete

    check_spec(logdir, spec)
    check_finished(spec, logdir)
    cells = spec.cells()
    print(f"plan: {len(cells)} runs in {logdir} (--dry-run: nothing is trained or written)")
    for cell in cells:
        path = cell.run_dir(logdir)
        state = (
            "finished"
            if is_complete(path)
            else "resume from checkpoint"
            if path.exists() and latest_path(path) is not None
            else "to run"
        )
        what = f"{cell.agent} on {cell.game} alone (fresh reference)" if cell.game else cell.agent
        print(f"  {path}  {what}, seed {cell.seed}, {spec.steps_of(cell)} steps: {state}")
    return 0


def _random_scores(args: argparse.Namespace) -> int:
    import torch as th

    from ewc_rl.config import load_config
    from ewc_rl.envs import parse_games, suite
    from ewc_rl.evaluation import evaluate
    from ewc_rl.report import mean_ci

    class Indifferent(th.nn.Module):
        """Equal Q-values: with epsilon = 1 the evaluator then plays uniformly random actions."""

        def forward(self, obs: th.Tensor) -> th.Tensor:
            return th.zeros(obs.shape[0], 1)

    games = parse_games(args.games)
    cfg = load_config(args.agent or ("minatar-dqn" if suite(games[0]) == "minatar" else "dqn"))
    cap = args.max_episode_steps or cfg.eval.max_episode_steps
    uniform = Indifferent()
    print(f"uniformly random actions, env settings of agent '{cfg.name}', episodes capped at {cap} steps")
    print(f"{'game':<24}{'episodes':>9}{'mean':>10}{'95% CI':>10}")
    for game in games:
        returns = [
            r
            for seed in args.seeds
            for r in evaluate(
                uniform, game, cfg.env, episodes=args.episodes, epsilon=1.0, max_episode_steps=cap, seed=seed
            )
        ]
        stat = mean_ci(returns)
        print(f"{game:<24}{len(returns):>9}{stat['mean']:>10.3f}{stat['ci95'] or 0:>10.3f}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ewc_rl import bench
    from ewc_rl.config import load_config
    from ewc_rl.envs import canonical_game, suite
    from ewc_rl.tblog import write_json

    game = canonical_game(args.game)
    if suite(game) != "atari":
        raise UsageError("ewc-rl bench measures Atari (84x84 frames, Nature CNN); give an ALE game")
    load_config(args.agent, args.overrides)  # a bad agent or setting fails here, in one line
    if args.json is not None and not args.json.parent.is_dir():
        raise UsageError(f"--json: no such directory: {args.json.parent}")

    def partial(result: dict[str, Any]) -> None:
        """Write the repeats so far, so that an interruption loses only the current one."""
        done = result["setup"].get("repeats", 1)
        if args.json is not None and done < args.repeat:
            write_json(
                args.json, {**result, "setup": {**result["setup"], "repeats": done, "repeats_asked": args.repeat}}
            )
            print(f"figures of {done} of {args.repeat} repeats: {args.json}", file=sys.stderr)

    result = bench.run_repeated(
        args.repeat, args.agent, game, args.size, args.overrides, progress=not args.no_progress, on_repeat=partial
    )
    print(bench.to_markdown(result))
    if args.json is not None:
        write_json(args.json, result)
        print(f"figures: {args.json}")
    return 0


def _inspect_fisher(args: argparse.Namespace) -> int:
    from ewc_rl.diagnose import inspect
    from ewc_rl.envs import canonical_game
    from ewc_rl.fisher import ESTIMATORS, from_replay

    replay = [name for name in ESTIMATORS if from_replay(name)]  # SI's path integral needs the training itself
    if args.estimator not in replay:
        raise UsageError(f"--estimator must be one of {', '.join(replay)}; got {args.estimator!r}")
    if any(not t > 0 for t in args.tau):
        raise UsageError("--tau values must be > 0")
    print(inspect(args.run, canonical_game(args.game) if args.game else None, args.tau, args.states, args.estimator))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ewc_rl.envs import parse_games
    from ewc_rl.report import mean_ci
    from ewc_rl.watch import evaluate_run

    if args.epsilon is not None and args.epsilon > 1:
        raise UsageError(f"--epsilon must be between 0 and 1; got {args.epsilon}")
    games = parse_games(args.games) if args.games else None
    video_dir = (args.video_dir or args.run / "videos") if args.video else None
    result = evaluate_run(
        args.run,
        games,
        episodes=args.episodes,
        epsilon=args.epsilon,
        seed=args.seed,
        video_dir=video_dir,
        video_format=args.video_format,
    )
    print(f"{args.run}: learner at step {result['step']}, epsilon {result['epsilon']:g}, {args.episodes} episodes")
    print(f"{'game':<24}{'mean':>10}{'95% CI':>10}{'min':>8}{'max':>8}")
    for game, r in result["games"].items():
        stat = mean_ci(r["returns"])
        ci = "-" if stat["ci95"] is None else f"{stat['ci95']:.2f}"
        print(f"{game:<24}{stat['mean']:>10.2f}{ci:>10}{min(r['returns']):>8g}{max(r['returns']):>8g}")
        if "video" in r:
            print(f"  video: {r['video']} ({r['frames']} frames, return {r['video_return']:g})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ewc_rl.report import write_report
    from ewc_rl.target import Target

    thresholds = {k: v for k in ("min_retention", "min_plasticity") if (v := getattr(args, k)) is not None}
    if thresholds and args.target is None:
        raise UsageError("--min-retention and --min-plasticity need --target BASELINE")
    target = None if args.target is None else Target(args.target, **thresholds)
    paths = write_report(args.logdir, args.reference, target)
    print(paths["md"].read_text())
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0


def _pool(args: argparse.Namespace) -> int:
    from ewc_rl.pool import write

    paths = write(args.dirs, args.out)
    print(paths["md"].read_text())
    print(f"pooled: {', '.join(str(p) for p in paths.values())}")
    return 0


def _toy(args: argparse.Namespace) -> int:
    import torch as th

    from ewc_rl import toy

    spec = toy.ToySpec(
        tasks=args.tasks,
        methods=tuple(args.methods),
        seeds=tuple(args.seeds),
        lambdas=toy.parse_lambdas(args.lambdas, toy.ToySpec().lambdas),
        steps_per_task=args.steps_per_task,
        lr=args.lr,
        hidden=args.hidden,
        eval_every=args.eval_every,
        fisher=args.fisher,
        decay=args.decay,
    )
    spec.validate()
    logdir: Path = args.logdir or Path("runs") / f"toy-{datetime.now():%Y%m%d-%H%M%S}"
    if logdir.exists() and (not logdir.is_dir() or any(logdir.iterdir())):
        raise UsageError(f"--logdir {logdir} already holds files; choose a new directory")
    th.set_num_threads(args.threads)
    toy.run(spec, logdir, progress=print)
    print((logdir / "comparison.md").read_text())
    print(f"report: {logdir / 'comparison.md'}, .json, .png; curves: tensorboard --logdir {logdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, argv)
        if args.command == "compare":
            return _compare(args)
        if args.command == "report":
            return _report(args)
        if args.command == "pool":
            return _pool(args)
        if args.command == "random-scores":
            return _random_scores(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "inspect-fisher":
            return _inspect_fisher(args)
        if args.command == "toy":
            return _toy(args)
        if args.command == "evaluate":
            return _evaluate(args)
    except UsageError as exc:
        print(f"ewc-rl: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"ewc-rl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ewc-rl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
