"""Agent files: schema, defaults, ``--set`` overrides and validation.

An agent file is TOML with the sections below. ``[dqn]`` uses stable-baselines3's ``DQN``
argument names unchanged, so a value can be copied from an SB3 script. Every continual method listed in
``agent.methods`` (see :mod:`ewc_rl.methods`) adds the section named after it, with the schema the method
declares. Every key is checked on load: an unknown key, a wrong type or an out-of-range value raises
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ewc_rl.errors import UsageError


class ConfigError(UsageError):
    """An agent file or ``--set`` override that does not fit the schema."""


def setting(
    default: Any = None,
    *,
    factory: Any = None,
    key: str | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A schema field: ``min``/``max`` are inclusive bounds, ``above`` an exclusive lower bound; ``key`` is the
    agent file's name when it differs from the field's (``lambda``); ``factory`` makes a list default."""
    meta = {"key": key, "min": min, "max": max, "above": above, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_opt = setting


@dataclass
class DQNConfig:
    """Arguments passed to stable-baselines3's ``DQN`` (same names, same meaning)."""

    learning_rate: float = _opt(1e-4, above=0)
    buffer_size: int = _opt(100_000, min=1)
    learning_starts: int = _opt(50_000, min=0)
    batch_size: int = _opt(32, min=1)
    tau: float = _opt(1.0, above=0, max=1)
    gamma: float = _opt(0.99, min=0, max=1)
    train_freq: int = _opt(4, min=1)
    gradient_steps: int = _opt(1, min=1)
    n_steps: int = _opt(1, min=1)
    target_update_interval: int = _opt(10_000, min=1)
    exploration_fraction: float = _opt(0.1, min=0, max=1)
    exploration_initial_eps: float = _opt(1.0, min=0, max=1)
    exploration_final_eps: float = _opt(0.01, min=0, max=1)
    max_grad_norm: float = _opt(10.0, above=0)
    optimize_memory_usage: bool = _opt(False)


@dataclass
class AgentConfig:
    """What ewc_rl adds around SB3's DQN."""

    network: str = _opt("auto", choices=("auto", "nature", "wide", "minatar"))
    per_game_layers: bool = _opt(False)
    per_game_head: bool = _opt(False)  # one Q head per game (multi-head), excluded from the penalty
    activation: str = _opt("relu", choices=("relu", "crelu"))
    layer_norm: bool = _opt(False)
    double_dqn: bool = _opt(True)
    per_game_replay: bool = _opt(True)
    keep_replay: bool = _opt(False)
    replay: str = _opt("auto", choices=("auto", "frames", "sb3"))
    n_envs: int = _opt(1, min=1)
    epsilon_per: str = _opt("segment", choices=("segment", "game"))
    epsilon_decay_steps: int = _opt(1_000_000, min=1)
    optimizer: str = _opt("adam", choices=("adam", "rmsprop", "rmsprop-dqn"))
    rmsprop_alpha: float = _opt(0.95, above=0, max=1)
    rmsprop_eps: float = _opt(0.01, above=0)
    rmsprop_centered: bool = _opt(True)
    on_nonfinite: str = _opt("stop", choices=("stop", "skip"))
    methods: list[str] = _opt(factory=lambda: ["penalty"])  # continual methods, in the order their hooks run
    # which game is this? "labels": the schedule says; "inferred": the recogniser of [recognition] infers it from
    # the frames, and every per-game part (layers, replay, epsilon, anchors, evaluation head) follows its context
    task_inference: str = _opt("labels", choices=("labels", "inferred"))


@dataclass
class EnvConfig:
    """Atari preprocessing (the DQN-paper defaults)."""

    noop_max: int = _opt(30, min=0)
    frame_skip: int = _opt(4, min=1)
    screen_size: int = _opt(84, min=8)
    frame_stack: int = _opt(4, min=1)
    terminal_on_life_loss: bool = _opt(True)
    repeat_action_probability: float = _opt(0.0, min=0, max=1)


@dataclass
class EvalConfig:
    """The evaluator: plays every game seen so far with a frozen policy."""

    every: int = _opt(250_000, min=1)
    episodes: int = _opt(10, min=1)
    epsilon: float = _opt(0.05, min=0, max=1)
    max_episode_steps: int = _opt(27_000, min=1)
    all_games: bool = _opt(False)
    plasticity: bool = _opt(True)  # plasticity/* diagnostics on a probe set of the current game (ewc_rl/probe.py)
    probe_states: int = _opt(256, min=1)


@dataclass
class RecognitionConfig:
    """The task recogniser used when ``agent.task_inference = "inferred"`` (:mod:`ewc_rl.recognition`)."""

    window: int = _opt(32, min=2)  # frames whose scores are summed for a switch decision
    threshold: float = _opt(50.0, above=0)  # nats by which a challenger must beat the current context
    alpha: float = _opt(1.0, above=0)  # symmetric Dirichlet prior of each pixel's categorical distribution (Laplace)
    size: int = _opt(42, min=1)  # Atari frames are averaged down to size x size (must divide env.screen_size)
    levels: int = _opt(8, min=2, max=256)  # grey levels of an averaged Atari pixel
    max_contexts: int = _opt(16, min=1)  # contexts at most: also the per-game layers' slots when inferred
    every: int = _opt(1, min=1)  # frames per batch: one vectorised pass every N agent steps (MinAtar: 8)


@dataclass
class ScheduleConfig:
    """Where ``--games randomN`` draws from when ``--pool`` is not given."""

    pool: str = _opt("")


SECTIONS: dict[str, type] = {
    "dqn": DQNConfig,
    "agent": AgentConfig,
    "env": EnvConfig,
    "eval": EvalConfig,
    "recognition": RecognitionConfig,
    "schedule": ScheduleConfig,
}


@dataclass
class Config:
    """A validated agent definition."""

    name: str
    source: str
    dqn: DQNConfig = field(default_factory=DQNConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    method_settings: dict[str, Any] = field(default_factory=dict)  # by method, for those agent.methods lists

    def section(self, method: str) -> Any:
        """The settings of ``method`` (its defaults when the agent file has no section for it)."""
        if method not in self.method_settings:
            from ewc_rl.methods import registry

            self.method_settings[method] = registry()[method].Settings()
        return self.method_settings[method]

    def __getattr__(self, name: str) -> Any:
        # cfg.penalty and the like: a method's section reads like a built-in one.
        from ewc_rl.methods import registry

        if name.startswith("_") or name not in registry():
            raise AttributeError(name)
        return self.section(name)

    def sections(self) -> dict[str, Any]:
        """Every section of this agent: the built-in ones, then one per active method, in order."""
        return {**{s: getattr(self, s) for s in SECTIONS}, **{m: self.section(m) for m in self.agent.methods}}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Settings by section, with the agent file's key names (``lambda``, not ``lam``)."""
        return {
            s: {_key(f): getattr(obj, f.name) for f in dataclasses.fields(obj)} for s, obj in self.sections().items()
        }

    def flat(self) -> dict[str, Any]:
        """``section.key -> value``, e.g. for TensorBoard hparams."""
        return {f"{s}.{k}": v for s, d in self.to_dict().items() for k, v in d.items()}


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def agents_dir() -> Path:
    """The ``agents/`` folder shipped with the repository."""
    return Path(__file__).resolve().parent.parent / "agents"


def available_agents() -> list[str]:
    return sorted(p.stem for p in agents_dir().glob("*.toml"))


def resolve_agent(name_or_path: str) -> Path:
    """An agent name (a file of ``agents/``) or a path to any TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"agent file not found: {name_or_path}")
        return path
    candidate = agents_dir() / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    names = available_agents()
    close = difflib.get_close_matches(name_or_path, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown agent '{name_or_path}'{hint}; available: {', '.join(names)}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value); the value is read as TOML, else as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set expects section.key=value, got '{text}'")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def eval_overrides(every: int | None, episodes: int | None) -> list[str]:
    """The ``--eval-every`` / ``--eval-episodes`` shortcuts as the agent-file overrides they stand for."""
    named = {"eval.every": every, "eval.episodes": episodes}
    return [f"{key}={value}" for key, value in named.items() if value is not None]


def load_config(agent: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read an agent file, apply ``--set`` overrides and validate everything."""
    path = resolve_agent(agent)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); TOML files are UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: '{section}' must be a table")
        raw[section][key] = value
    return from_dict(raw, name=path.stem, source=str(path))


def from_dict(raw: dict[str, Any], *, name: str = "custom", source: str = "<dict>") -> Config:
    """Validate a parsed agent file; errors name the offending ``section.key``."""
    from ewc_rl.methods import registry

    methods = registry()
    schemas = {**SECTIONS, **{m: cls.Settings for m, cls in methods.items()}}
    sections = {}
    for section, table in raw.items():
        if section not in schemas:
            raise ConfigError(f"{source}: unknown section '[{section}]'{_did_you_mean(section, schemas)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{section}' must be a table")
        sections[section] = _build(schemas[section], section, table, source)
    built_in = {s: v for s, v in sections.items() if s in SECTIONS}
    cfg = Config(name=name, source=source, **built_in)
    active = cfg.agent.methods
    for method in active:
        if method not in methods:
            raise ConfigError(
                f"{source}: 'agent.methods' names an unknown method '{method}'"
                f"{_did_you_mean(method, methods)}; known: {', '.join(methods)}"
            )
    if len(set(active)) < len(active):
        raise ConfigError(f"{source}: 'agent.methods' lists a method twice: {active}")
    for section in sections.keys() - SECTIONS.keys():
        if section not in active:
            raise ConfigError(
                f"{source}: '[{section}]' configures the method '{section}', which 'agent.methods' "
                f"does not list ({active}); add it there or drop the section"
            )
        cfg.method_settings[section] = sections[section]
    for method in active:
        methods[method].check(cfg.section(method), cfg)
    n, freq = cfg.agent.n_envs, cfg.dqn.train_freq
    if freq % n and n % freq:
        raise ConfigError(
            f"{source}: 'dqn.train_freq' ({freq} agent steps per update) and 'agent.n_envs' ({n}) "
            "must divide one another"
        )
    return cfg


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls: type, section: str, table: dict[str, Any], source: str) -> Any:
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        where = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{where}'{_did_you_mean(key, fields)}")
        f = fields[key]
        values[f.name] = _check(where, f, value, source)
    return cls(**values)


def _check(where: str, f: dataclasses.Field, value: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    ok = {
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"{source}: '{where}' must be {_article(kind)}, got {value!r}")
    if kind == "float":  # every float setting: TOML reads nan and inf, and no setting means them
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{where}' must be a finite number, got {value!r}")
    m = f.metadata
    if kind == "list[str]":
        return list(value)
    if m["choices"] and value not in m["choices"]:
        raise ConfigError(f"{source}: '{where}' must be one of {', '.join(m['choices'])}; got {value!r}")
    if m["min"] is not None and value < m["min"]:
        raise ConfigError(f"{source}: '{where}' must be >= {m['min']}, got {value!r}")
    if m["max"] is not None and value > m["max"]:
        raise ConfigError(f"{source}: '{where}' must be <= {m['max']}, got {value!r}")
    if m["above"] is not None and value <= m["above"]:
        raise ConfigError(f"{source}: '{where}' must be > {m['above']}, got {value!r}")
    return value


def _article(kind: str) -> str:
    return {
        "bool": "a boolean (true/false)",
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "list[str]": "a list of strings",
    }[kind]
