"""Who may connect and how much they may do: bans, limits and scoring.

``Node(..., policy=Policy(BanRegistry(clock, SqliteBanStore(path))),
limits=ConnectionLimits(...))``; ``docs/security.md`` says what each
decides.  ``BanDatabaseError`` is in :mod:`blueprint_net.errors`.
"""

from __future__ import annotations

from blueprint_net._adapters.banstore import SqliteBanStore
from blueprint_net._policy.bans import Ban, BanRegistry, IBanStore, Origin
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import Policy, PolicySettings

__all__ = [
    "Ban",
    "BanRegistry",
    "ConnectionLimits",
    "IBanStore",
    "Origin",
    "Policy",
    "PolicySettings",
    "SqliteBanStore",
]
