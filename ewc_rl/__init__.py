"""ewc_rl: sequential DQN on Atari games with Elastic Weight Consolidation, charted in TensorBoard."""

__version__ = "0.1.0"
