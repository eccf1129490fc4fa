"""Continual-learning methods and remedies behind one interface, and the registry of their names.

A *method* is anything that helps keep earlier games or learn new ones: a quadratic anchor (EWC, L2, online EWC),
rehearsal, a functional anchor, an optimiser or layer reset, ReDo. The learner and the trainer call its hooks at
fixed points of a run; a method overrides only those it needs:

    check(settings, cfg)               the agent file is loaded: refuse settings of other sections it cannot run with
    setup(agent)                       once the learner exists (and again after ``load``)
    on_segment_start(agent, game)      a game's segment begins (also when a segment is resumed)
    batch_share(agent, batch_size)     how many of each update's samples the method supplies itself (rehearsal)
    loss(agent, batch)                 a term added to the TD loss before backward (sees the batch, both networks)
    inputs(agent, batch)               states to evaluate in the update's own forward; then joined_loss instead of loss
    on_gradients(agent, params, log)   after backward, before clipping: add to ``.grad`` directly
    after_step(agent)                  after the optimiser step (path integrals, periodic resets)
    on_segment_end(agent, end)         the segment is over and evaluated: consolidate, store, reset
    state_dict() / load_state_dict()   tensors and plain containers only, for the code-free checkpoint
    callbacks(agent)                   extra SB3 callbacks for per-step work (every N steps, ...)

Each method owns one agent-file section named after it, whose schema is its ``Settings`` dataclass (fields made
with :func:`ewc_rl.config.setting`); ``agent.methods`` lists the active ones in the order their hooks run.

Adding a method is one module: subclass :class:`Method`, decorate it with :func:`register`, and either put the
module in this package (every module here is imported when the registry is first read) or name it in the
``EWC_RL_PLUGINS`` environment variable (comma-separated importable modules, as ``PYTEST_PLUGINS`` does for
pytest), which reaches ``ewc-rl compare``'s worker processes too.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment

PLUGINS_ENV = "EWC_RL_PLUGINS"


@dataclass
class NoSettings:
    """The settings of a method that has none."""


@dataclass
class SegmentEnd:
    """What a method learns at the end of a segment, beside the learner itself."""

    game: str
    index: int  # position in the schedule
    last: bool  # no segment follows: nothing would use a consolidation
    seed: int  # the run's seed, for draws that must be reproducible
    status: Callable[[str], None] = field(default=lambda text: None)  # a word for the progress bar


class Method:
    """Base class: every hook does nothing, so a method overrides only what it needs."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    # Settings under which the method does something (it may do nothing at its defaults, e.g. lambda = 0):
    # what the conformance tests and the docs' examples use.
    example: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    # -- before a run: what --dry-run prints ---------------------------------------------------------

    @classmethod
    def check(cls, settings: Any, cfg: Config) -> None:
        """Raise :class:`ewc_rl.config.ConfigError` (one line, naming the keys) for a combination with other
        sections that the method cannot run with; called when an agent file is loaded."""

    @classmethod
    def describe(cls, settings: Any, cfg: Config, schedule: list[Segment]) -> list[str]:
        """Lines for the plan (``train --dry-run``): what the method will do and what it costs."""
        return []

    @classmethod
    def warnings(cls, settings: Any, cfg: Config, schedule: list[Segment]) -> list[str]:
        """Settings that make the method pointless on this schedule, said before the run starts."""
        return []

    # -- hooks ---------------------------------------------------------------------------------------

    def setup(self, agent: ContinualDQN) -> None:
        """The learner's networks exist (called again when ``load`` rebuilds them)."""

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        """A segment of ``game`` begins, or resumes."""

    def batch_share(self, agent: ContinualDQN, batch_size: int) -> int:
        """How many of an update's ``batch_size`` samples this method supplies itself, scored in its :meth:`loss`
        as a sum over them divided by ``batch_size``; the current game's replay supplies the rest, and its TD loss
        is weighted by its share, so that the update's loss is the mean over one mixed batch."""
        return 0

    def loss(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        """A differentiable term added to the TD loss of this update, or None."""
        return None

    def inputs(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        """Observations whose online Q-values this update's term needs, to be evaluated in the update's own forward
        (joined to the batch's); the learner then calls :meth:`joined_loss` with their Q-values instead of
        :meth:`loss`. None (the default): :meth:`loss` runs its own forward.

        A second forward through the same weights costs more than the extra rows of one: backward computes every
        weight's gradient once per forward and sums the full-size copies. Join only where the rows cannot tell
        (no per-game layers, no batch statistics: :func:`ewc_rl.methods.store.one_forward`).
        """
        return None

    def joined_loss(self, agent: ContinualDQN, batch: ReplayBufferSamples, q: th.Tensor) -> th.Tensor | None:
        """:meth:`loss` given ``q``, the online Q-values of the observations the latest :meth:`inputs` returned."""
        raise NotImplementedError(f"{type(self).__name__} returns inputs() but has no joined_loss()")

    def on_gradients(self, agent: ContinualDQN, params: dict[str, th.nn.Parameter], log: bool) -> dict[str, float]:
        """Add to the ``.grad`` of ``params`` (the shared parameters) after backward; return ``train/<key>`` values
        to log (computing them only when ``log``, every 8th update). Each value is checked for finiteness."""
        return {}

    def after_step(self, agent: ContinualDQN) -> None:
        """The optimiser has just stepped."""

    def on_segment_end(self, agent: ContinualDQN, end: SegmentEnd) -> None:
        """The segment is over and evaluated, its replay memory still in place."""

    def objective(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        """The value whose gradient this method adds (through :meth:`loss` or :meth:`on_gradients`), for tests."""
        return self.loss(agent, batch)

    def callbacks(self, agent: ContinualDQN) -> list[BaseCallback]:
        """Extra stable-baselines3 callbacks run at every step of a segment."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: tensors and plain containers only."""
        return {}

    def load_state_dict(self, state: dict[str, Any], device: Any) -> None:
        """Inverse of :meth:`state_dict`."""


M = TypeVar("M", bound=type[Method])
_REGISTRY: dict[str, type[Method]] = {}
_loaded = False


def register(cls: M) -> M:
    """Class decorator: make a method available under ``cls.name`` (also its agent-file section)."""
    if not cls.name or not cls.name.replace("-", "_").isidentifier():
        raise ValueError(f"method {cls.__name__} needs a name made of letters, digits, '-' and '_'")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"two methods are named {cls.name!r}: {_REGISTRY[cls.name].__name__} and {cls.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(module)


def registry() -> dict[str, type[Method]]:
    """Every method by name: this package's modules, then the ``EWC_RL_PLUGINS`` modules."""
    _load()
    return dict(_REGISTRY)


def names() -> tuple[str, ...]:
    return tuple(registry())


def build(cfg: Config) -> list[Method]:
    """The methods ``cfg.agent.methods`` lists, in that order, each with its section's settings."""
    methods = registry()
    return [methods[name](cfg.section(name)) for name in cfg.agent.methods]
