"""What matching needs of the process that answers a match: ``MatchHost``.

Two processes answer matches with the same code (``node.net.matching``, ``node.net.screening``):
the node (``node.net.context.Node``) and a match replica (``node.replica.app.Replica``), which
holds the same index and provenance, followed from its node's change feed. A replica has no
membership, no local lists and no match log: it answers ``None`` for them, and matching then
judges every signal by the policy alone (no signal is this member's own there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from node.config import LimitsConfig, MediaConfig
from node.matchpolicy import MatchPolicy
from node.media.index import MatchIndex
from node.moderation.service import Moderation
from node.net.local_lists import LocalLists
from protocol.membership import Membership


class MatchSettings(Protocol):
    @property
    def limits(self) -> LimitsConfig: ...
    @property
    def media(self) -> MediaConfig: ...
    @property
    def match(self) -> MatchPolicy: ...


class MatchHost(Protocol):
    @property
    def config(self) -> MatchSettings: ...
    @property
    def index(self) -> MatchIndex: ...
    @property
    def index_lock(self) -> asyncio.Lock: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def membership(self) -> Membership | None: ...
    @property
    def lists(self) -> LocalLists | None: ...
    @property
    def moderation(self) -> Moderation | None: ...
    @property
    def own_member(self) -> str | None:
        """This member's identity (its own signals are judged by radius alone), if any."""
        ...

    async def signal_rows(self, rows: Sequence[int], now_ms: int) -> list[dict[str, Any]]:
        """Provenance of indexed signals by key, in order (unknown keys left out)."""
        ...
