"""Signed peer requests (SPEC 10.1): the profile, the clock window, the replay cache and the
node a request was signed for. The verifier is pure (time is a parameter), so every rule is
checked at exact instants."""

from __future__ import annotations

import time

import pytest
from peer_signing import DEVIATIONS, sign_deviant

from node.errors import PeerError
from node.net.httpsig import (
    MisdirectedRequestError,
    NotAMemberError,
    ReplayCacheFullError,
    RequestVerifier,
    SignatureRefusedError,
    sign_request,
)
from protocol.keys import SigningKey

T0 = 1_700_000_000  # well before the real clock: nothing may depend on it
KEY = SigningKey(bytes(range(32)))
A = "https://a.example:7400/"
HEADS = A + "v1/heads"


def member(key: str) -> bool:
    return key == KEY.public


def verify(
    verifier: RequestVerifier,
    headers: dict[str, str],
    *,
    now_s: float,
    url: str = HEADS,
    method: str = "GET",
    body: bytes = b"",
) -> str:
    return verifier.verify(method, url, headers, body, now_s=now_s, is_member=member)


@pytest.mark.parametrize("url", ["garbage", "/v1/heads", "http:///v1/heads"])
def test_an_unsignable_url_is_a_peer_error(url: str) -> None:
    with pytest.raises(PeerError, match="cannot sign a request"):
        sign_request(SigningKey(bytes(32)), "GET", url, b"", now_s=1_763_800_000.0)


def test_a_signed_request_verifies_once() -> None:
    verifier = RequestVerifier([A])
    body = b'{"x":1}\n'
    headers = sign_request(KEY, "POST", A + "v1/records", body, now_s=T0)
    assert {"Signature", "Signature-Input", "Content-Digest"} <= set(headers)
    assert verify(verifier, headers, now_s=T0, url=A + "v1/records", method="POST", body=body)
    with pytest.raises(SignatureRefusedError, match="replayed"):
        verify(verifier, headers, now_s=T0 + 1, url=A + "v1/records", method="POST", body=body)
    with pytest.raises(SignatureRefusedError, match="does not verify"):  # another body
        headers = sign_request(KEY, "POST", A + "v1/records", body, now_s=T0)
        verify(verifier, headers, now_s=T0, url=A + "v1/records", method="POST", body=b"{}\n")


# ---- the profile: receivers refuse every deviation --------------------------------------------


def test_a_conforming_signature_made_from_the_spec_verifies() -> None:
    headers = sign_deviant(KEY, "GET", HEADS, b"", "none", now_s=T0)
    assert verify(RequestVerifier([A]), headers, now_s=T0) == KEY.public


@pytest.mark.parametrize("deviation", [d for d in DEVIATIONS if d != "none"])
def test_each_deviation_from_the_profile_is_refused(deviation: str) -> None:
    body = b'{"x":1}\n'
    headers = sign_deviant(KEY, "POST", A + "v1/records", body, deviation, now_s=T0)
    verifier = RequestVerifier([A])
    with pytest.raises(SignatureRefusedError) as refused:
        verify(verifier, headers, now_s=T0, url=A + "v1/records", method="POST", body=body)
    assert refused.value.status == 401
    assert len(verifier) == 0  # nothing remembered from a refused request


@pytest.mark.parametrize("name", ["Signature", "Signature-Input", "Content-Digest"])
def test_a_repeated_signature_field_is_refused(name: str) -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict(sign_request(KEY, "GET", HEADS, b"", now_s=T0))
    headers.add(name.lower(), headers[name])
    with pytest.raises(SignatureRefusedError, match=f"{name.lower()} appears more than once"):
        RequestVerifier([A]).verify("GET", HEADS, headers, b"", now_s=T0, is_member=member)


def test_a_non_member_key_is_403() -> None:
    headers = sign_request(SigningKey(b"\x42" * 32), "GET", HEADS, b"", now_s=T0)
    with pytest.raises(NotAMemberError) as refused:
        verify(RequestVerifier([A]), headers, now_s=T0)
    assert refused.value.status == 403


# ---- the clock window: +-300 s, both ways (issue 13 item 9) -----------------------------------


@pytest.mark.parametrize("skew", [-300, -299, -6, 0, 6, 299, 300])
def test_created_within_300_s_either_way_is_accepted(skew: int) -> None:
    headers = sign_request(KEY, "GET", HEADS, b"", now_s=T0 + skew)
    assert verify(RequestVerifier([A]), headers, now_s=T0) == KEY.public


@pytest.mark.parametrize("skew", [-301, 301, 10**6])
def test_created_beyond_300_s_either_way_is_refused(skew: int) -> None:
    headers = sign_request(KEY, "GET", HEADS, b"", now_s=T0 + skew)
    with pytest.raises(SignatureRefusedError, match="outside"):
        verify(RequestVerifier([A]), headers, now_s=T0)


def test_a_peer_clock_6_s_fast_is_accepted_by_the_real_clock() -> None:
    """The package's own clock check (5 s into the future) must not apply."""
    now = time.time()
    headers = sign_request(KEY, "GET", HEADS, b"", now_s=now + 6)
    assert verify(RequestVerifier([A]), headers, now_s=now) == KEY.public


# ---- the replay cache keeps each request until created + window (issue 13 item 7) -----------


def test_a_future_created_request_cannot_be_replayed_after_its_acceptance_window() -> None:
    verifier = RequestVerifier([A])
    headers = sign_request(KEY, "GET", HEADS, b"", now_s=T0 + 200)  # a clock 200 s fast
    verify(verifier, headers, now_s=T0)
    for later in (301, 450, 500):  # acceptance + 300 passed; created + 300 not yet
        with pytest.raises(SignatureRefusedError, match="replayed"):
            verify(verifier, headers, now_s=T0 + later)
    with pytest.raises(SignatureRefusedError, match="outside"):
        verify(verifier, headers, now_s=T0 + 501)
    assert len(verifier) == 0  # forgotten once it could no longer verify


def test_entries_are_forgotten_once_they_cannot_verify_again() -> None:
    verifier = RequestVerifier([A])
    for i in range(5):
        verify(verifier, sign_request(KEY, "GET", HEADS, b"", now_s=T0 + i), now_s=T0 + i)
    assert len(verifier) == 5
    verify(verifier, sign_request(KEY, "GET", HEADS, b"", now_s=T0 + 302), now_s=T0 + 302)
    assert len(verifier) == 4  # created T0 + 0 and + 1 expired; + 302 added


def test_a_full_replay_cache_refuses_rather_than_forgets() -> None:
    verifier = RequestVerifier([A], max_entries=2)
    for _ in range(2):
        verify(verifier, sign_request(KEY, "GET", HEADS, b"", now_s=T0), now_s=T0)
    with pytest.raises(ReplayCacheFullError) as full:
        verify(verifier, sign_request(KEY, "GET", HEADS, b"", now_s=T0), now_s=T0)
    assert full.value.status == 503
    verify(verifier, sign_request(KEY, "GET", HEADS, b"", now_s=T0 + 301), now_s=T0 + 301)


# ---- the node a request was signed for (issue 13 item 8) -------------------------------------


@pytest.mark.parametrize(
    "signed_for",
    [
        "https://b.example:7400/v1/heads",  # another node
        "https://made.up.example/v1/heads",  # nobody
        "https://a.example:7401/v1/heads",  # another port
        "http://a.example:7400/v1/heads",  # another scheme
    ],
)
def test_a_request_signed_for_another_authority_is_misdirected(signed_for: str) -> None:
    verifier = RequestVerifier([A, "https://proxy.example/"])
    headers = sign_request(KEY, "GET", signed_for, b"", now_s=T0)
    with pytest.raises(MisdirectedRequestError, match="answers only to") as refused:
        verify(verifier, headers, now_s=T0, url=signed_for)
    assert refused.value.status == 421
    assert len(verifier) == 0


@pytest.mark.parametrize(
    "signed_for",
    [HEADS, "https://A.Example:7400/v1/heads", "https://proxy.example:443/v1/heads"],
)
def test_a_request_signed_for_this_node_or_an_alias_verifies(signed_for: str) -> None:
    verifier = RequestVerifier([A, "https://proxy.example/"])
    headers = sign_request(KEY, "GET", signed_for, b"", now_s=T0)
    assert verify(verifier, headers, now_s=T0, url=signed_for) == KEY.public


def test_a_verifier_for_no_url_refuses_everything() -> None:
    headers = sign_request(KEY, "GET", HEADS, b"", now_s=T0)
    with pytest.raises(MisdirectedRequestError, match="answers only to nothing"):
        verify(RequestVerifier(), headers, now_s=T0)
