"""Which peer URLs a node stops contacting when members lose the peer protocol (SPEC 10.6)."""

from __future__ import annotations

import hashlib

import pytest

from node.net.peerset import Claims, barred_reason, claims_of, lost_protocol
from protocol import Federation, Founder, SigningKey, VoteBody, sign_record
from protocol.bodies import AnnounceBody
from protocol.federation import draft_genesis, sign_genesis, verify_genesis
from protocol.membership import Membership, derive_membership

KEYS = {n: SigningKey(hashlib.sha256(f"peerset {n}".encode()).digest()) for n in "abcd"}
A, B, C, D = (KEYS[n].public for n in "abcd")
URL_C, URL_D, URL_SHARED = "https://c.example/", "https://d.example/", "https://shared.example/"
PIN_D = "d" * 64


def federation() -> Federation:
    founders = [Founder(name, key.public, "member") for name, key in KEYS.items()]
    document = draft_genesis("peerset tests", 2, founders)
    for key in KEYS.values():
        document = sign_genesis(document, key)
    return verify_genesis(document)


FED = federation()


def membership_after(*removed: str) -> Membership:
    """Founders a..d; a and b vote to remove each name in removed (after seq 0)."""
    votes = []
    for voter in (KEYS["a"], KEYS["b"]):
        prev = None
        for seq, name in enumerate(removed, start=1):
            body = VoteBody("remove", KEYS[name].public, after=0)
            record = sign_record(voter, fed=FED.id, seq=seq, prev=prev, ts=1, body=body)
            votes.append(record)
            prev = record.id
    prefixes = {key.public: len(removed) for key in KEYS.values()}
    return derive_membership(FED, prefixes, votes)


def test_lost_protocol_names_removed_members() -> None:
    assert lost_protocol(membership_after()) == {}
    assert lost_protocol(membership_after("d")) == {D: "member d was removed"}


def claims_with_d_and_c() -> Claims:
    membership = membership_after("d")
    endpoints = [{"member": C, "urls": [URL_C, URL_SHARED], "tls": "c" * 64}]
    # d's own announce no longer counts (removed after 0): it is read from its stored log
    announces = [(D, AnnounceBody(name="d", urls=(URL_D, URL_SHARED), tls=PIN_D))]
    return claims_of(endpoints, announces, membership)


@pytest.mark.parametrize(
    ("url", "pin", "barred"),
    [
        (URL_D, None, True),  # only the removed member announced it
        (URL_SHARED, None, False),  # a member in good standing announces it too
        (URL_C, None, False),
        ("https://seed.example/", PIN_D, True),  # a seed pinned to the removed node's TLS key
        ("https://seed.example/", None, False),  # traced to nobody: cannot be judged
        (URL_C, PIN_D, False),  # c announces the URL: it stays
    ],
)
def test_barred_reason(url: str, pin: str | None, barred: bool) -> None:
    lost = lost_protocol(membership_after("d"))
    reason = barred_reason(url, pin, claims_with_d_and_c(), lost)
    assert (reason == "member d was removed") if barred else reason is None
