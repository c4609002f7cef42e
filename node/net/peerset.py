"""Which peer URLs this node must not contact: those of members that lost the peer protocol.

A member that is removed, or whose key a fork froze, may no longer take part in the peer
protocol (SPEC 10.6): other nodes refuse its requests (``Membership.is_peer_key``) and stop
sending to its node. Requests are refused by key; a node is reached by URL, so the URL has to
be traced to its member. ``Claims`` records who announced what: for every URL the member
identities whose signed ``announce`` names it, and for every TLS key fingerprint the identities
that announced it. For a member that lost the protocol every announce it ever signed counts,
also those its freeze left uncounted (a removal ``after`` 0, a fork at seq 1): it named that
node itself.

A peer is *barred* when it is traced to members (by its URL, or by the pin of a seed written
``#spki=…``) and every one of them lost the protocol: a URL that a member in good standing
also announces stays. A URL traced to nobody (a plain seed no announce names) cannot be
judged and stays; its node's requests are still refused by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from node.errors import PeerError
from protocol.bodies import AnnounceBody
from protocol.membership import Membership


class PeerBarredError(PeerError):
    """This node does not contact that peer: its member lost the peer protocol."""

    status = 409
    title = "peer not contacted"


class NotCountedError(PeerError):
    """A peer answered 403: it does not count this node's key as a member (not admitted
    yet, removed, or frozen by a fork). Not misbehaviour: the views differ."""

    title = "refused by peer"


@dataclass(slots=True)
class Claims:
    """Who announced what: URL -> member identities, TLS fingerprint -> member identities."""

    urls: dict[str, set[str]] = field(default_factory=dict)
    pins: dict[str, set[str]] = field(default_factory=dict)

    def add(self, identity: str, urls: Iterable[str], tls: str | None) -> None:
        for url in urls:
            self.urls.setdefault(url, set()).add(identity)
        if tls:
            self.pins.setdefault(tls, set()).add(identity)


def lost_protocol(membership: Membership) -> dict[str, str]:
    """Member identities that may no longer take part in the peer protocol, with why."""
    lost: dict[str, str] = {}
    for identity, member in membership.members.items():
        if membership.is_peer_key(member.current_key):
            continue
        why = "was removed" if member.removed else "signed two records at one seq (a fork)"
        lost[identity] = f"member {member.name} {why}"
    return lost


def claims_of(
    endpoints: Iterable[Mapping[str, object]],
    announces: Iterable[tuple[str, AnnounceBody]],
    membership: Membership,
) -> Claims:
    """Claims from the members' latest counted announces (``Store.endpoints``) and from
    every announce signed by keys of members that lost the protocol (author key, body)."""
    claims = Claims()
    for endpoint in endpoints:
        urls = endpoint.get("urls")
        tls = endpoint.get("tls")
        claims.add(
            str(endpoint["member"]),
            map(str, urls if isinstance(urls, list) else []),
            tls if isinstance(tls, str) else None,
        )
    for author, body in announces:
        identity = membership.owner.get(author)
        if identity is not None:
            claims.add(identity, body.urls, body.tls)
    return claims


def barred_reason(url: str, pin: str | None, claims: Claims, lost: Mapping[str, str]) -> str | None:
    """Why url (with its TLS pin) must not be contacted, or None if it may be."""
    owners = claims.urls.get(url, set()) | (claims.pins.get(pin, set()) if pin else set())
    if not owners or not owners <= lost.keys():
        return None
    return "; ".join(sorted(lost[identity] for identity in owners))
