"""Reference scores for normalisation: (score - low) / (high - low), 0 = random policy.

Atari: the random and human scores of DeepMind's DQN Zoo (``dqn_zoo/atari_data.py`` in
github.com/google-deepmind/dqn_zoo, commit 359945dc; the same table as the project's REFERENCE.md
section 4, which lists 31 of its 57 games: Defender, FishingDerby, Riverraid and the others come from
the same file). Human-normalised: 1 = the human tester.

MinAtar: ``low`` is a uniformly random policy and ``high`` a single-game agent of ours, both measured
on this project's machine (see docs/results/minatar.md for the commands); 1 = that reference agent.

A game without an entry is reported in raw return; no value is ever invented.
"""

from __future__ import annotations

# ROM id: (random, human). Keys are ale-py ROM ids; ALE names are their CamelCase (space_invaders ->
# SpaceInvaders).
_DQN_ZOO: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "".join(part.capitalize() for part in rom.split("_")): value for rom, value in _DQN_ZOO.items()
}

# MinAtar game: (random policy, reference agent), measured on a 2-core CPU (docs/results/minatar.md has
# the commands). Random: uniformly random actions, sticky actions 0.1, 300 episodes (seeds 0-2).
# Reference: agent minatar-dqn trained on that game alone for 500k agent steps (seed 0, epsilon decayed
# over the first 50k), mean return of the evaluations in its last 100k steps (5 x 30 episodes, eps 0.05).
# Seaquest's reference is weak (DQN barely learns it in 500k steps): its normalised scores are coarse.
MINATAR_RANDOM_REFERENCE: dict[str, tuple[float, float]] = {
    "MinAtar/Asterix": (0.430, 6.820),
    "MinAtar/Breakout": (0.563, 6.300),
    "MinAtar/Freeway": (0.120, 47.553),
    "MinAtar/Seaquest": (0.120, 1.507),
    "MinAtar/SpaceInvaders": (2.937, 24.933),
}


def reference(game: str) -> tuple[float, float] | None:
    """(low, high) for ``game``, or None when no table has an entry."""
    return ATARI_RANDOM_HUMAN.get(game) or MINATAR_RANDOM_REFERENCE.get(game)


def normalize(game: str, score: float | None) -> float | None:
    """Normalised score (0 = random, 1 = human or reference agent), or None if the game or the score is unknown."""
    ref = reference(game)
    if ref is None or score is None:
        return None
    low, high = ref
    return (score - low) / (high - low)
