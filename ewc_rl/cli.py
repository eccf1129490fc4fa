"""Command line: ``ewc-rl train ...`` (also ``python -m ewc_rl``).

Parsing and error reporting only: a mistake the user can fix is one line on stderr and exit code 2,
with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from ewc_rl.errors import UsageError


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ewc-rl",
        description="Continual reinforcement learning on Atari: sequential DQN with Elastic Weight Consolidation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train one agent on a sequence of games",
        description="Train one agent on a sequence of games, consolidating after each game, and chart it "
                    "in TensorBoard.",
        epilog="example: ewc-rl train --agent ewc --games Pong,Breakout --steps-per-game 1000000 --seed 0",
    )
    train.add_argument("--agent", default="ewc", metavar="NAME|PATH",
                       help="an agent of agents/ (dqn, ewc, online-ewc, l2) or a TOML file (default: ewc)")
    train.add_argument("--games", required=True, metavar="G1,G2,...",
                       help="comma-separated ALE game names in training order, e.g. Pong,Breakout")
    train.add_argument("--steps-per-game", type=_positive_int, default=1_000_000, metavar="N",
                       help="agent steps (= 4 frames each) per game visit (default: 1000000)")
    train.add_argument("--cycles", type=_positive_int, default=1, metavar="N",
                       help="repeat the whole sequence N times: revisits (default: 1)")
    train.add_argument("--seed", type=_nonnegative_int, default=0)
    train.add_argument("--logdir", type=Path, default=None,
                       help="run directory, must be new or empty (default: runs/<agent>-<time>)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting of the agent file, e.g. --set penalty.lambda=1000 "
                            "(repeatable)")
    train.add_argument("--eval-every", type=_positive_int, default=None, metavar="N",
                       help="evaluate all games seen so far every N agent steps (default: the agent's "
                            "eval.every)")
    train.add_argument("--eval-episodes", type=_positive_int, default=None, metavar="K",
                       help="episodes per game and evaluation (default: the agent's eval.episodes)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto picks CUDA when available (default: auto)")
    train.add_argument("--threads", type=_nonnegative_int, default=0, metavar="N",
                       help="torch threads, 0 = torch's default (default: 0)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    # Heavy imports only once arguments are known to be valid, so `--help` and errors are instant.
    import torch as th

    from ewc_rl.config import load_config
    from ewc_rl.envs import parse_games
    from ewc_rl.trainer import RunSpec, Trainer, format_score_matrix

    overrides = list(args.overrides)
    if args.eval_every is not None:
        overrides.append(f"eval.every={args.eval_every}")
    if args.eval_episodes is not None:
        overrides.append(f"eval.episodes={args.eval_episodes}")
    cfg = load_config(args.agent, overrides)
    games = parse_games(args.games)
    if args.device == "cuda" and not th.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    logdir: Path = args.logdir or Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if logdir.exists() and (not logdir.is_dir() or any(logdir.iterdir())):
        raise UsageError(f"--logdir {logdir} already holds files; choose a new directory or remove it")
    if args.threads:
        th.set_num_threads(args.threads)

    spec = RunSpec(games=games, steps_per_game=args.steps_per_game, logdir=logdir, cycles=args.cycles,
                   seed=args.seed, device=args.device, progress=not args.no_progress,
                   command=["ewc-rl", *argv])
    summary = Trainer(cfg, spec).run()
    print(f"\nmean evaluation return after each segment ({cfg.name}, seed {args.seed}):")
    print(format_score_matrix(summary))
    print(f"\nlogs and summary.json: {logdir}")
    print(f"open them with: tensorboard --logdir {logdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, argv)
    except UsageError as exc:
        print(f"ewc-rl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ewc-rl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
