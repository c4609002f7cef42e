"""The federation's list as a STIX 2.1 bundle (``hashmesh export --format stix``).

Built from the stored signed records with the protocol's own fold, so the bundle says what
an audit of the same records says:

- each member is an ``identity`` (class ``organization``);
- each signal is an ``indicator`` created by its member: a pattern on the file hash (``MD5``,
  ``SHA-1``, ``SHA-256`` are STIX names; PDQ, pHash and dHash have none, so they are
  ``x_pdq``, ``x_phash``, ``x_dhash`` as STIX asks of custom hash names) or on the URL, the
  labels as ``labels``, the note as ``description``, ``valid_until`` its expiry, ``revoked``
  when its member retracted it;
- each member's latest ``confirm`` or ``dispute`` is an ``opinion`` (``agree`` / ``disagree``)
  on the indicator, its note as ``explanation``; a ``seen`` is a ``sighting`` where the member
  saw it;
- every object names the record it comes from in ``external_references`` (source
  ``hashmesh``), and its STIX id is a UUIDv5 of that record id, so exporting twice gives the
  same ids.

Needs the optional ``stix2`` package (``pip install 'hashmesh[stix]'``); every object is
built, and so checked, by it.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from typing import Any

from node.media.types import STIX_HASHES
from protocol.bodies import OpinionBody
from protocol.federation import Federation
from protocol.fold import SignalState, fold_state
from protocol.records import Record

NAMESPACE = uuid.UUID("6b1e4a52-3a7c-5d0e-9b8f-0c4d2e7a9f31")  # hashmesh's UUIDv5 namespace
HASH_NAMES = STIX_HASHES  # hashmesh type -> STIX 2.1 hash algorithm (node.media.types)
VERDICT_OPINIONS = {"confirm": "agree", "dispute": "disagree"}
SOURCE = "hashmesh"


def stix_id(kind: str, record_or_key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, record_or_key)}"


def stix_time(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def pattern(signal_type: str, value: str) -> str:
    if signal_type == "url":
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"[url:value = '{quoted}']"
    name = HASH_NAMES.get(signal_type, f"x_{signal_type}")
    return f"[file:hashes.{name} = '{value}']"


def reference(record_id: str) -> list[dict[str, str]]:
    return [{"source_name": SOURCE, "external_id": record_id}]


def stix_bundle(records: Iterable[Record], federation: Federation, now_ms: int) -> Any:
    """A ``stix2.Bundle`` of the federation's signals, members, opinions and sightings."""
    import stix2

    by_id: dict[str, Record] = {}
    for record in records:
        by_id[record.id] = record
    state = fold_state(by_id.values(), federation, now_ms)
    members = state.membership.members
    identities = {
        identity: stix2.Identity(
            id=stix_id("identity", identity), name=member.name, identity_class="organization",
            created=stix_time(0), modified=stix_time(0),
            external_references=[{"source_name": SOURCE, "external_id": identity}],
        )
        for identity, member in members.items()
    }  # fmt: skip
    objects: list[Any] = list(identities.values())
    indicators: dict[str, Any] = {}
    for signal in sorted(state.signals.values(), key=lambda s: (s.ts, s.id)):
        indicators[signal.id] = _indicator(stix2, signal, identities, by_id)
    objects += indicators.values()
    for (signal_id, identity), opinion in sorted(state.opinions.items()):
        indicator, record = indicators.get(signal_id), by_id[opinion.record]
        if indicator is None or identity not in identities:
            continue
        body = record.body
        note = body.note if isinstance(body, OpinionBody) else None
        common = {
            "id": stix_id("sighting" if opinion.verdict == "seen" else "opinion", record.id),
            "created_by_ref": identities[identity].id,
            "created": stix_time(record.ts), "modified": stix_time(record.ts),
            "external_references": reference(record.id),
        }  # fmt: skip
        if opinion.verdict == "seen":
            objects.append(stix2.Sighting(
                sighting_of_ref=indicator.id, where_sighted_refs=[identities[identity].id],
                description=note, **common,
            ))  # fmt: skip
        else:
            objects.append(stix2.Opinion(
                opinion=VERDICT_OPINIONS[opinion.verdict], object_refs=[indicator.id],
                explanation=note, labels=list(opinion.labels) or None, **common,
            ))  # fmt: skip
    return stix2.Bundle(objects=objects, id=stix_id("bundle", federation.id))


def _indicator(
    stix2: Any, signal: SignalState, identities: dict[str, Any], by_id: dict[str, Record]
) -> Any:
    created = stix_time(signal.ts)
    retract = by_id.get(signal.retracted_by) if signal.retracted_by else None
    modified = stix_time(retract.ts) if retract is not None else created
    valid_until = stix_time(signal.expires) if signal.expires is not None else None
    if valid_until is not None and valid_until <= created:
        valid_until = created + datetime.timedelta(milliseconds=1)  # STIX: after valid_from
    creator = identities.get(signal.member)
    return stix2.Indicator(
        id=stix_id("indicator", signal.id), name=f"{signal.type}:{signal.value}",
        description=signal.note, pattern=pattern(signal.type, signal.value),
        pattern_type="stix", valid_from=created, valid_until=valid_until,
        created=created, modified=max(modified, created), revoked=signal.status == "retracted",
        labels=list(signal.labels) or None,
        created_by_ref=creator.id if creator is not None else None,
        external_references=reference(signal.id),
    )  # fmt: skip
