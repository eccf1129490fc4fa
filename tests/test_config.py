"""Agent files: the shipped ones load, and every kind of mistake is one precise error."""

from __future__ import annotations

import pytest

from ewc_rl.config import ConfigError, available_agents, from_dict, load_config, parse_override


def test_shipped_agents_load():
    assert {"dqn", "ewc", "online-ewc", "l2"} <= set(available_agents())
    kinds = {name: load_config(name).penalty.kind for name in ("dqn", "ewc", "online-ewc", "l2")}
    assert kinds == {"dqn": "none", "ewc": "ewc", "online-ewc": "online-ewc", "l2": "l2"}


def test_every_shipped_agent_file_loads():
    """An agent file added with a typo fails here, not an hour into an experiment that names it."""
    for name in available_agents():
        load_config(name)


def test_the_recommended_agents_are_the_studys_choice():
    """docs/results/continual.md fixed the recommended agent; its files must not drift from what was measured."""
    assert load_config("minatar-recommended").to_dict() == load_config("minatar-functional-crelu-ln").to_dict()
    remedy = ["agent.activation='crelu'", "agent.layer_norm=true"]
    assert load_config("recommended").to_dict() == load_config("functional", remedy).to_dict()


def test_shipped_files_spell_out_every_default_they_mention():
    """The commented defaults in dqn.toml are the schema's defaults (the file documents the schema).

    The one deliberate exception, marked "(schema default 1)" in the file: Atari agents step 4 environments.
    """
    cfg = load_config("dqn").to_dict()
    expected = from_dict({}).to_dict() | {"penalty": cfg["penalty"]}
    expected["agent"] = expected["agent"] | {"n_envs": 4}
    assert cfg == expected


def test_overrides_apply_and_parse_toml_values():
    cfg = load_config(
        "ewc", ["penalty.lambda=1e3", "dqn.buffer_size=4000", "penalty.fisher=exact", "agent.double_dqn=false"]
    )
    assert cfg.penalty.lam == 1000.0
    assert cfg.dqn.buffer_size == 4000
    assert cfg.penalty.fisher == "exact"
    assert cfg.agent.double_dqn is False
    assert parse_override("penalty.fisher=sampled") == ("penalty", "fisher", "sampled")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("penalty.lamda=3", "unknown key 'penalty.lamda' (did you mean 'lambda'?)"),
        ("dqn.buffer_size=1.5", "'dqn.buffer_size' must be an integer, got 1.5"),
        ("dqn.buffer_size=true", "'dqn.buffer_size' must be an integer, got True"),
        ("penalty.lambda=-1", "'penalty.lambda' must be >= 0, got -1.0"),
        ("penalty.kind=ewk", "'penalty.kind' must be one of none, l2, ewc, online-ewc; got 'ewk'"),
        ("penalty.fisher=fast", "'penalty.fisher' must be one of sampled, exact, empirical"),
        ("dqn.learning_rate=0", "'dqn.learning_rate' must be > 0"),
        ("eval.epsilon=2", "'eval.epsilon' must be <= 1"),
        ("agent.double_dqn=1", "'agent.double_dqn' must be a boolean"),
        ("peanlty.kind=ewc", "unknown section '[peanlty]' (did you mean 'penalty'?)"),
        ("lambda=3", "--set expects section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("ewc", [override])
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_unknown_agent_lists_close_names(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown agent 'ewk' \(did you mean ewc"):
        load_config("ewk")
    with pytest.raises(ConfigError, match="agent file not found"):
        load_config(str(tmp_path / "missing.toml"))


def test_agent_file_by_path_and_bad_toml(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('[penalty]\nkind = "ewc"\nlambda = 5\n')
    cfg = load_config(str(good))
    assert (cfg.name, cfg.penalty.lam) == ("mine", 5.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("[penalty\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


def _float_settings() -> list[str]:
    import dataclasses

    from ewc_rl.config import SECTIONS, _key
    from ewc_rl.methods import registry

    schemas = {**SECTIONS, **{name: method.Settings for name, method in registry().items()}}  # methods' sections too
    return [f"{s}.{_key(f)}" for s, cls in schemas.items() for f in dataclasses.fields(cls) if f.type == "float"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_setting_must_be_finite(value):
    names = _float_settings()
    assert "penalty.lambda" in names and "dqn.learning_rate" in names and len(names) >= 10
    for name in names:
        with pytest.raises(ConfigError) as err:
            load_config("ewc", [f"{name}={value}"])
        assert f"'{name}' must be a finite number" in str(err.value), name


def test_an_agent_file_that_is_not_utf8_is_one_line(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('# r\xe9glages\n[penalty]\nkind = "ewc"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(str(latin))
    assert "not a UTF-8 text file" in str(err.value) and "\n" not in str(err.value)
