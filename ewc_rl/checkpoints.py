"""Crash-safe checkpoints in code-free formats.

A checkpoint is a directory ``<run>/checkpoints/ckpt-<seq>/`` holding

* ``meta.json``: counters, schedule position, evaluator history, settings, RNG states, and the SHA-256
  of every other file (plain JSON: reading it runs nothing);
* ``state.pt``: tensors only (networks, optimiser, penalty anchors), read back with
  ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers;
* ``replay-<n>.npz`` (optional): replay memories as raw arrays, read with ``allow_pickle=False``.

Writing is atomic with one commit point: files go into a hidden temporary directory ``.ckpt-<seq>.tmp``,
are fsynced, and the directory is renamed to ``ckpt-<seq>`` (then the parent is fsynced). A ``ckpt-<seq>``
directory therefore exists only once every file in it is complete, and the checkpoint is the one with the
highest number; a new one takes the next number above every ``ckpt-*`` on disk, so it never collides with a
directory a crash left behind. Older checkpoints are removed only after the rename. A crash at any moment
leaves the previous or the new checkpoint, complete. (There is no separate ``LATEST`` pointer: a second
rename would be a second commit point, and a kill between the two left a run that could not resume.)
stable-baselines3's own ``save`` (a cloudpickle zip) is not used for resuming: unpickling a tampered file
could run code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ewc_rl.errors import RunError, UsageError

FORMAT_VERSION = 1
DIRNAME = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{6,})$")


class CheckpointError(UsageError):
    """A checkpoint that cannot be used: missing, damaged, tampered with, or from another format version."""


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (full disk, unwritable directory); the previous one is intact."""


@dataclass
class Checkpoint:
    """What :func:`load` returns."""

    path: Path
    meta: dict[str, Any]
    state: dict[str, Any]
    replays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, writer: Callable[[IO[bytes]], object]) -> str:
    """Write a file through ``writer``, fsync it, and return its SHA-256."""
    with open(path, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())
    return _sha256(path)


def _savez(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its allow_pickle flag


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def latest_path(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (the highest-numbered ``ckpt-*`` with its meta.json), or None."""
    root = run_dir / DIRNAME
    if not root.is_dir():
        return None
    done = [p for p in _numbered(root) if (p / "meta.json").is_file()]
    return done[-1] if done else None


def _numbered(root: Path) -> list[Path]:
    """Every ``ckpt-<seq>`` directory, complete or half removed, in increasing order."""
    return sorted((p for p in root.iterdir() if _NAME.match(p.name)), key=lambda p: int(p.name[5:]))


def save(
    run_dir: Path, meta: dict[str, Any], state: dict[str, Any], replays: dict[str, dict[str, np.ndarray]] | None = None
) -> Path:
    """Write a new checkpoint and make it the latest; older ones are removed once it is in place."""
    root = run_dir / DIRNAME
    previous = latest_path(run_dir)
    taken = _numbered(root) if root.is_dir() else []
    seq = int(taken[-1].name[5:]) + 1 if taken else 0
    name = f"ckpt-{seq:06d}"
    tmp = root / f".{name}.tmp"
    try:
        root.mkdir(exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {"state.pt": _write(tmp / "state.pt", lambda f: torch.save(state, f))}
        replay_files = {}
        for i, (key, arrays) in enumerate((replays or {}).items()):
            replay_files[key] = fname = f"replay-{i}.npz"
            files[fname] = _write(tmp / fname, functools.partial(_savez, arrays=arrays))
        meta = {**meta, "format": FORMAT_VERSION, "files": files, "replay_files": replay_files}
        _write(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1, allow_nan=False).encode()))
        _fsync_dir(tmp)
        os.rename(tmp, root / name)  # the commit point
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint ({previous}) is intact" if previous else "no earlier checkpoint exists"
        reason = exc.strerror or str(exc)
        raise CheckpointWriteError(f"could not write a checkpoint under {root}: {reason}; {kept}") from None
    for stale in root.iterdir():  # best effort: a leftover costs disk space, never correctness
        if stale.name != name:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    return root / name


def load(run_dir: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Read the latest checkpoint; every failure is one :class:`CheckpointError` line."""
    path = latest_path(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: meta.json cannot be read ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        version = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this ewc_rl reads version "
            f"{FORMAT_VERSION} (resume it with the ewc_rl release that wrote it)"
        )
    files = meta.get("files")
    if not isinstance(files, dict) or "state.pt" not in files:
        raise CheckpointError(f"checkpoint {path} is damaged: meta.json lists no state.pt")
    for fname, digest in files.items():
        target = path / str(fname)
        if not target.is_file() or _sha256(target) != digest:
            raise CheckpointError(
                f"checkpoint {path} is damaged or was modified: {fname} does not match its recorded checksum"
            )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: the refusal says it all
            warnings.simplefilter("ignore")
            state = torch.load(path / "state.pt", map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any failure of the safe unpickler means: not ours)
        raise CheckpointError(
            f"checkpoint {path}: state.pt is not a tensors-only file, so it was not loaded "
            f"and nothing in it ran (tensors-only unpickler: {_refusal_reason(exc)})"
        ) from None
    replays = {}
    for key, fname in meta.get("replay_files", {}).items():
        try:
            with np.load(path / fname, allow_pickle=False) as data:
                replays[key] = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: {fname} is not a plain array file ({exc})") from None
    return Checkpoint(path, meta, state, replays)


def _refusal_reason(exc: Exception) -> str:
    """The one informative sentence of a torch.load failure (its message is a page of advice around it)."""
    text = " ".join(str(exc).split())
    _, found, reason = text.partition("WeightsUnpickler error:")
    if found:
        reason = reason.split(" Check the documentation")[0].split(". ")[0].strip().rstrip(".")
    return reason or type(exc).__name__


# -- RNG states as JSON/tensors -------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the global RNGs that training draws from."""
    import random

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return meta, tensors


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    import random

    n = meta["numpy"]
    np.random.set_state(
        (n["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = meta["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    torch.set_rng_state(tensors["torch"].cpu())
    if "cuda" in tensors and torch.cuda.is_available() and len(tensors["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(tensors["cuda"].cpu()))
