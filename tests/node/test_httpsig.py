"""Signing peer requests: a URL that cannot be signed is that peer's failure, not a crash."""

from __future__ import annotations

import pytest

from node.errors import PeerError
from node.httpsig import sign_request
from protocol.keys import SigningKey


@pytest.mark.parametrize("url", ["garbage", "/v1/heads", "http:///v1/heads"])
def test_an_unsignable_url_is_a_peer_error(url: str) -> None:
    with pytest.raises(PeerError, match="cannot sign a request"):
        sign_request(SigningKey(bytes(32)), "GET", url, b"", now_s=1_763_800_000.0)


def test_a_peer_url_is_signed() -> None:
    headers = sign_request(
        SigningKey(bytes(32)), "POST", "http://127.0.0.1:7400/v1/records", b"x\n", now_s=1e9
    )
    assert {"Signature", "Signature-Input", "Content-Digest"} <= set(headers)
