"""TensorBoard tags and the run's summary.json.

Everything goes through stable-baselines3's ``Logger`` (TensorBoard format), so SB3's own keys and ours
land in one event stream whose x axis is the global agent step of the whole sequence. Tags:

    train/td_loss  train/penalty  train/epsilon  train/episode_return  train/fps  train/game
    train/skipped_updates (only when non-finite updates are skipped)
    eval/<Game>/return  eval/<Game>/normalized  eval/mean_return  eval/mean_normalized
    eval/<Game>/forgetting  eval/mean_forgetting
    eval/clipped_normalized_sum  eval/cost_share  eval/score_matrix (image)  schedule/switch (text)
    metrics/average_performance  metrics/mean_forgetting  metrics/clipped_normalized_sum (each game's end;
    the first two are the HParams tab's metrics, so that sweeps sort by them there)
    fisher/<parameter> (histogram, at each consolidation)
    with inferred tasks: recognition/context, recognition/game (the true game's column), recognition/switch (text),
    recognition/accuracy, recognition/cost_share, recognition/confusion (image, at each game switch),
    eval/<Game>/context (the context an evaluation used)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.logger import HParam, Logger, TensorBoardOutputFormat, make_output_format
from torch.utils.tensorboard import SummaryWriter


class _DeferredFlushWriter(SummaryWriter):
    """A SummaryWriter whose ``flush`` waits for its background thread (every ``flush_secs``) or :func:`flush`.

    SB3's TensorBoard output flushes after every dump, and a run dumps at every episode's end: on MinAtar that
    was a tenth of the training time. Events are flushed at every checkpoint, so a crash loses only events that
    a resume would purge anyway.
    """

    def flush(self) -> None:
        pass

    def flush_now(self) -> None:
        super().flush()


class _TensorBoard(TensorBoardOutputFormat):
    def __init__(self, folder: str) -> None:
        self.writer = _DeferredFlushWriter(log_dir=folder, flush_secs=10)
        self._is_closed = False


def create_logger(logdir: Path, formats: tuple[str, ...] | list[str] = ()) -> Logger:
    """An SB3 logger writing TensorBoard events straight into ``logdir`` (no ``run_N`` sub-folder), and SB3's
    other ``formats`` (csv: progress.csv, json: progress.json) beside them."""
    os.makedirs(logdir, exist_ok=True)
    others = [make_output_format(f, str(logdir)) for f in formats if f != "tensorboard"]
    return Logger(str(logdir), [_TensorBoard(str(logdir)), *others])


def flush(logger: Logger) -> None:
    """Write every event logged so far to disk (before a checkpoint records that they happened)."""
    writer = _writer(logger)
    (writer.flush_now if isinstance(writer, _DeferredFlushWriter) else writer.flush)()


# The HParams tab's metric columns: scalar tags whose last value it shows per run (and sorts by).
HPARAM_METRICS = ("metrics/average_performance", "metrics/mean_forgetting", "eval/mean_return", "eval/mean_forgetting")
RUN_METRICS = ("average_performance", "mean_forgetting", "clipped_normalized_sum")


def log_hparams(logger: Logger, hparams: dict[str, Any]) -> None:
    """The run's settings in TensorBoard's HParams tab, with :data:`HPARAM_METRICS` as its metrics."""
    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    logger.record(
        "hparams", HParam(clean, dict.fromkeys(HPARAM_METRICS, 0.0)), exclude=("stdout", "log", "json", "csv")
    )
    logger.dump(0)


def log_run_metrics(logger: Logger, metrics: dict[str, Any], step: int) -> None:
    """The run's metrics so far (those of summary.json and comparison.md) as metrics/* scalars."""
    for key in RUN_METRICS:
        if metrics.get(key) is not None:
            logger.record(f"metrics/{key}", float(metrics[key]))
    logger.dump(step)


def log_fisher(logger: Logger, fisher: dict[str, th.Tensor], step: int) -> None:
    """One histogram per parameter tensor of the Fisher just estimated."""
    for name, values in fisher.items():  # histograms: TensorBoard only
        logger.record(f"fisher/{name}", values.detach().float().cpu(), exclude=("stdout", "log", "json", "csv"))
    logger.dump(step)


def check_writable(logdir: Path) -> None:
    """Refuse (UsageError) a log directory that files cannot be created in, before anything is written.

    The directory and its missing parents are created, a probe file is created and removed, and whatever was
    created is removed again: the run itself creates them moments later. Trying is the only reliable test
    (``os.access`` says yes to root whatever the permission bits, and knows nothing of a full disk).
    """
    from ewc_rl.errors import UsageError

    for _ in range(10):
        try:
            _try_creating(logdir)
            return
        except (FileNotFoundError, FileExistsError) as exc:
            # A parent vanished or appeared between the walk and the mkdir: a parallel run of the same comparison
            # removed, or created, the shared parent. Walking again sees it as it is now.
            error = exc
    raise UsageError(f"--logdir {logdir} is not writable: {error.strerror or error}")


def _try_creating(logdir: Path) -> None:
    from ewc_rl.errors import UsageError

    existing, missing = logdir, []
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--logdir {logdir}: {existing} is a file, not a directory")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        fd, probe = tempfile.mkstemp(dir=logdir, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as exc:
        raise UsageError(f"--logdir {logdir} is not writable: {exc.strerror or exc}") from None
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


def _umask() -> int:
    mask = os.umask(0o022)  # Python can only read the umask by setting it
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` as JSON atomically: readers see the old file or the new one, never half of one.

    The file gets the mode a plain ``open`` would give (0644 under the usual umask), not ``mkstemp``'s 0600:
    colleagues on a shared file system read summaries and reports. ``durable=False`` skips the fsync, for
    files rewritten every few seconds whose loss in a crash costs nothing.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its summary.json says ``complete``)."""
    try:
        return bool(json.loads((run_dir / "summary.json").read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def purge_events_after(logdir: Path, step: int) -> int:
    """Drop every event with a step above ``step`` from the event files in ``logdir``; return how many.

    Used on resume, so that no tag shows repeated or backward steps. Each file is rewritten whole and
    replaced atomically, so the purge is idempotent: a crash during it is repaired by the next resume.
    A torn last record (a kill during a write) is dropped too.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ewc_rl.checkpoints import replace_atomically

    dropped = 0
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [r for r in records if Event.FromString(r).step <= step]
        intact = sum(len(r) + 16 for r in records) == path.stat().st_size  # 16: length, CRCs
        if len(kept) == len(records) and intact:
            continue
        buffer = io.BytesIO()
        writer = RecordWriter(buffer)
        for record in kept:
            writer.write(record)
        replace_atomically(path, buffer.getvalue())
        dropped += len(records) - len(kept)
    return dropped


def _writer(logger: Logger) -> Any:
    """The SummaryWriter behind SB3's TensorBoard output (for what SB3's logger has no verb for)."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            return fmt.writer
    raise RuntimeError("the logger has no TensorBoard output")


def log_layout(logger: Logger, games: list[str]) -> None:
    """Custom-scalars layout: every game's evaluation curve in one chart (returns, and normalised scores),
    and one chart per game, where overlaid runs (a comparison's agents and seeds) are the lines."""
    _writer(logger).add_custom_scalars(
        {
            "forgetting": {
                "normalized score per game": ["Multiline", [f"eval/{g}/normalized" for g in games]],
                "return per game": ["Multiline", [f"eval/{g}/return" for g in games]],
                "summary": ["Multiline", ["eval/mean_normalized", "eval/clipped_normalized_sum"]],
                "forgetting per game (best so far minus now)": ["Multiline", [f"eval/{g}/forgetting" for g in games]],
                "run metrics": ["Multiline", [f"metrics/{k}" for k in RUN_METRICS] + ["eval/mean_forgetting"]],
            },
            "each game": {f"{g} (return)": ["Multiline", [f"eval/{g}/return"]] for g in games},
            "training": {
                "loss": ["Multiline", ["train/td_loss", "train/penalty"]],
                "episode return": ["Multiline", ["train/episode_return"]],
            },
        }
    )


def log_game_switch(logger: Logger, step: int, index: int, game: str, total: int) -> None:
    """A text marker where a new game starts."""
    logger.record("schedule/switch", f"step {step}: segment {index + 1}/{total} starts, game **{game}**")
    logger.dump(step)


def score_heatmap(
    matrix: list[list[float | None]],
    rows: list[str],
    columns: list[str],
    title: str,
    limits: tuple[float, float] | None = None,
    labels: tuple[str, str] = ("evaluated game", "after segment"),
) -> Any:
    """A matplotlib figure of the score matrix: rows = after segment k, columns = games (or any table: ``labels``
    names the x and y axes).

    Colours span ``limits`` (values beyond them take the end colours), the same in every image of a run, with a
    colour bar; without ``limits``, the range of the values shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    longest = max(len(r) for r in rows)
    fig, ax = plt.subplots(
        figsize=(1.5 + 0.08 * longest + 1.3 * len(columns), 1.8 + 0.5 * len(rows)), layout="constrained"
    )
    known = data[~np.isnan(data)]
    low, high = limits or ((float(known.min()), float(known.max())) if known.size else (0.0, 1.0))
    image = ax.imshow(
        np.ma.masked_invalid(data), cmap="viridis", aspect="auto", vmin=low, vmax=high if high > low else low + 1.0
    )
    below, above = bool((known < low).any()), bool((known > high).any())
    fig.colorbar(
        image,
        ax=ax,
        fraction=0.08,
        pad=0.02,
        extend={(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above), "both"),
    )
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    for (i, j), v in np.ndenumerate(data):
        if np.isnan(v):
            ax.text(j, i, "not evaluated", ha="center", va="center", color="grey", fontsize=7)
        else:
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                color="w",
                fontsize=8,
                bbox={"facecolor": "black", "alpha": 0.3, "linewidth": 0, "pad": 1},
            )
    return fig


def log_score_heatmap(
    logger: Logger,
    matrix: list[list[float | None]],
    rows: list[str],
    columns: list[str],
    step: int,
    title: str,
    limits: tuple[float, float] | None = None,
) -> None:
    from stable_baselines3.common.logger import Figure

    logger.record(
        "eval/score_matrix",
        Figure(score_heatmap(matrix, rows, columns, title, limits), close=True),
        exclude=("stdout", "log", "json", "csv"),
    )
    logger.dump(step)


def log_confusion(logger: Logger, confusion: dict[str, dict[str, int]], games: list[str], step: int) -> None:
    """recognition/confusion (image): each game's share of agent steps in each inferred context."""
    from stable_baselines3.common.logger import Figure

    rows = [g for g in games if confusion.get(g)]
    contexts = sorted({int(c) for g in rows for c in confusion[g]})
    matrix: list[list[float | None]] = [
        [confusion[g].get(str(c), 0) / sum(confusion[g].values()) for c in contexts] for g in rows
    ]
    figure = score_heatmap(
        matrix,
        rows,
        [f"context {c}" for c in contexts],
        "share of each game's steps per inferred context",
        (0.0, 1.0),
        ("inferred context", "true game"),
    )
    logger.record("recognition/confusion", Figure(figure, close=True), exclude=("stdout", "log", "json", "csv"))
    logger.dump(step)
