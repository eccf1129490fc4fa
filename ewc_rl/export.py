"""The trained agent in stable-baselines3's own format: ``models/after-<game>.zip`` and ``models/final.zip``.

What is saved is a *view*: a plain SB3 ``DQN`` holding the learner's Q-network (policy class, its constructor
arguments and the weights), not the ``ContinualDQN`` itself. ``ContinualDQN.save`` would pickle the learner's
class and its continual methods (anchors, Fisher tensors), so loading it would need ewc_rl's learner code and
would drag the consolidation state along; the view loads with ``stable_baselines3.DQN.load`` and serves
``predict`` exactly as the suite's evaluator plays (``argmax`` of the same Q-network).

With per-game layers the view selects one game (the policy's ``game`` constructor argument, saved with it):
``after-<game>.zip`` that game, ``final.zip`` the last game trained; ``model.policy.set_game(i)`` switches.
The code-free checkpoints (``checkpoints/``) stay the files for resuming; a zip holds pickled objects, so load
only zips you trust.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from stable_baselines3 import DQN

from ewc_rl import networks
from ewc_rl.agent import ContinualDQN
from ewc_rl.checkpoints import replace_atomically

DIRNAME = "models"


def safe_name(game: str) -> str:
    """A game name usable as a file name on every system: ``MinAtar/Breakout`` -> ``MinAtar-Breakout``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", game).strip("-.") or "game"


def after_game_path(run_dir: Path, game: str) -> Path:
    return run_dir / DIRNAME / f"after-{safe_name(game)}.zip"


def final_path(run_dir: Path) -> Path:
    return run_dir / DIRNAME / "final.zip"


def plain_dqn(agent: ContinualDQN, game: str, epsilon: float) -> DQN:
    """A stock SB3 ``DQN`` with ``agent``'s Q-network weights, playing ``game`` (ε-greedy ``predict`` uses ``epsilon``).

    Built without an environment: the spaces are copied and the replay memory is one transition (SB3 builds
    one for every DQN; a view never trains).
    """
    policy_kwargs = dict(agent.policy_kwargs)
    if isinstance(agent.policy, networks.PerGameCnnPolicy):
        policy_kwargs["game"] = agent.task_index(game)
    view = DQN(  # no environment: a container of weights (SB3 accepts env=None; its stubs do not say so)
        agent.policy_class,  # type: ignore[arg-type]
        env=None,  # type: ignore[arg-type]
        learning_rate=agent.learning_rate,
        buffer_size=1,
        learning_starts=0,
        batch_size=agent.batch_size,
        tau=agent.tau,
        gamma=agent.gamma,
        target_update_interval=agent.target_update_interval,
        exploration_initial_eps=agent.exploration_initial_eps,
        exploration_final_eps=agent.exploration_final_eps,
        max_grad_norm=agent.max_grad_norm,
        policy_kwargs=policy_kwargs,
        device="cpu",
        _init_setup_model=False,
    )
    view.observation_space, view.action_space, view.n_envs = agent.observation_space, agent.action_space, 1
    view._setup_model()
    view.policy.load_state_dict(agent.policy.state_dict())
    view.policy.set_training_mode(False)
    view.num_timesteps = agent.num_timesteps
    view.exploration_rate = epsilon
    return view


def save(agent: ContinualDQN, game: str, path: Path, epsilon: float) -> Path:
    """Write the view of ``agent`` playing ``game`` to ``path`` atomically (a reader never sees half a zip)."""
    buffer = io.BytesIO()
    plain_dqn(agent, game, epsilon).save(buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, buffer.getvalue())
    return path
