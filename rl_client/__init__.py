"""RL client for the GSRM reward: HTTP client, trainer adapters, reward components, rlkd-train.

Why lazy exports: ``import rl_client`` must stay cheap and side-effect free (no httpx, torch or
TRL at import); the names below load their module on first access.

- ``RewardClient`` / ``AsyncRewardClient`` / ``RewardError``: ``rl_client.client``
- ``make_trl_reward``, ``compute_score``: ``rl_client.adapters`` (TRL, verl; OpenRLHF uses the
  server's ``/get_reward`` directly)
- ``get_reward_funcs``: ``rl_client.rewards`` (accuracy, format, tag_count, gsrm)
- ``rlkd-train``: ``rl_client.train:main``

See rl_client/README.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RewardClient": "rl_client.client",
    "AsyncRewardClient": "rl_client.client",
    "RewardError": "rl_client.client",
    "make_trl_reward": "rl_client.adapters",
    "compute_score": "rl_client.adapters",
    "get_reward_funcs": "rl_client.rewards",
}

__all__ = ["AsyncRewardClient", "RewardClient", "RewardError", "compute_score",
           "get_reward_funcs", "make_trl_reward"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rl_client' has no attribute {name!r}")
