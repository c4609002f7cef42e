"""What a UI form signs: the same bodies, checks and signing path as the local API.

Each function turns a form's text into protocol bodies with the local API's rules (labels
normalised and checked against the taxonomy by ``node.net.local_api``'s own helper, values in
canonical form, "only the contributor retracts", featureless values refused) and signs them
with ``Node.author`` -- the call every ``POST /v1/...`` handler ends in, which signs, stores,
indexes and gossips. So a form and the API give the same answer to the same input, and bad
input raises ``FormError`` with the API's words before anything is signed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

from node.clock import now_ms
from node.errors import NodeError, explain
from node.net.context import Node
from node.net.local_api import UPLOAD_TYPES
from node.net.local_api import _labels as api_labels
from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody, VoteBody
from protocol.errors import ProtocolError
from protocol.labels import check_in_taxonomy
from protocol.records import Record, is_record_id
from protocol.signal_types import SIGNAL_TYPES, canonical_value, check_authorable

DAY_MS: Final = 86_400_000
MAX_EXPIRY_DAYS: Final = 100 * 366
__all__ = ["UPLOAD_TYPES", "FormError"]


class FormError(Exception):
    """Form input that cannot be signed; the message is shown on the page."""


def _explained(e: Exception) -> FormError:
    return FormError(explain(e) if isinstance(e, NodeError | ProtocolError) else str(e))


def labels_of(node: Node, texts: Iterable[str]) -> tuple[str, ...]:
    """Labels from checkboxes and free text (split on commas and spaces), as the API reads
    them: normalised, and each in the federation's taxonomy."""
    tokens = [t for text in texts for t in re.split(r"[\s,]+", text) if t]
    try:
        labels = api_labels(node, tokens)
        check_in_taxonomy(labels, node.federation.taxonomy)  # shown on the form, not later
        return labels
    except (NodeError, ProtocolError) as e:
        raise _explained(e) from e


def optional_text(text: str) -> str | None:
    return text.strip() or None


def expiry(days: str, *, now: int) -> int | None:
    """An expiry in days from now, as the record's ms timestamp ("" never expires)."""
    if not days.strip():
        return None
    if not days.strip().isdigit() or not 1 <= int(days) <= MAX_EXPIRY_DAYS:
        raise FormError(f"expires: a whole number of days from 1 to {MAX_EXPIRY_DAYS:,}")
    return now + int(days) * DAY_MS


def signal_bodies(
    hashes: Iterable[str], labels: tuple[str, ...], note: str | None, expires: int | None
) -> list[SignalBody]:
    """One signal per ``type:value``, refused whole if any is invalid or featureless."""
    bodies = []
    for text in hashes:
        kind, sep, value = text.strip().partition(":")
        if not sep or kind not in SIGNAL_TYPES:
            raise FormError(
                f"{text[:80]!r}: give a signal type ({', '.join(SIGNAL_TYPES)}) and a value"
            )
        try:
            body = SignalBody(kind, canonical_value(kind, value), labels, note, expires)
            check_authorable(body.type, body.value)
        except (NodeError, ProtocolError) as e:
            raise _explained(e) from e
        bodies.append(body)
    if not bodies:
        raise FormError("give a hash to add")
    return bodies


def opinion_body(
    signal_id: str, verdict: str, labels: tuple[str, ...], note: str | None
) -> OpinionBody:
    try:
        return OpinionBody(signal_id, verdict, labels, note)
    except ProtocolError as e:
        raise _explained(e) from e


async def retract_body(node: Node, signal_id: str, reason: str | None) -> RetractBody:
    """The local API's retract check: the signal exists and this member contributed it."""
    now = now_ms()
    row = await node.store.read(lambda s: s.signal(signal_id, now_ms=now))
    if row is None:
        raise FormError(f"no signal {signal_id}")
    if row["member"] != node.identity:
        raise FormError("only the member that contributed a signal can retract it")
    try:
        return RetractBody(signal_id, reason)
    except ProtocolError as e:
        raise _explained(e) from e


def admit_body(card: str, key: str, name: str, role: str) -> VoteBody:
    """An admission from a pasted card (``hashmesh card`` output) or from its fields."""
    if card.strip():
        try:
            data = json.loads(card)
        except ValueError as e:
            raise FormError(f"the card is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise FormError("the card must be a JSON object with name, key and role")
        key, name, role = (str(data.get(k, "")) for k in ("key", "name", "role"))
    try:
        return VoteBody("admit", key.strip().lower(), name=name.strip(), role=role.strip())
    except ProtocolError as e:
        raise _explained(e) from e


async def remove_body(node: Node, member: str, after: str) -> VoteBody:
    """A removal of a current member (by identity); after defaults to its head seq here."""
    membership = node.membership
    found = None if membership is None else membership.members.get(member)
    if found is None or found.removed:
        raise FormError("choose a current member to remove")
    key = found.current_key
    if after.strip():
        if not after.strip().isdigit():
            raise FormError("after: the member's last seq that keeps counting (a whole number)")
        seq = int(after)
    else:
        head = await node.store.read(lambda s: s.head(key))
        seq = 0 if head is None else head.seq
    try:
        return VoteBody("remove", key, after=seq)
    except ProtocolError as e:
        raise _explained(e) from e


def signal_id(text: str) -> str:
    if not is_record_id(text):
        raise FormError("a signal id is 64 lowercase hex characters")
    return text


async def author(node: Node, bodies: Iterable[Body]) -> list[Record]:
    """Sign, store, index and gossip each body, as the local API does (Node.author)."""
    records = []
    for body in bodies:
        try:
            records.append(await node.author(body))
        except (NodeError, ProtocolError) as e:
            raise _explained(e) from e
    return records
