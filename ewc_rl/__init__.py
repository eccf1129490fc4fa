"""ewc_rl: sequential DQN on Atari games with Elastic Weight Consolidation, charted in TensorBoard.

Python API: :func:`ewc_rl.train` and :func:`ewc_rl.compare` (:mod:`ewc_rl.api`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "compare", "Run", "Comparison"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import ewc_rl` (and so `ewc-rl --help`) stays free of torch and SB3.
    if name in __all__:
        from ewc_rl import api

        return getattr(api, name)
    raise AttributeError(f"module 'ewc_rl' has no attribute {name!r}")
