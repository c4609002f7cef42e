"""URL normalisation for the url signal type (a table of expected forms, and idempotence)."""

from __future__ import annotations

import pytest
from fuzzdepth import depth
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import SignalBody
from protocol.errors import InvalidHashError
from protocol.signal_types import canonical_value, check_value
from protocol.urls import MAX_URL_CHARS, normalise_url

NORMALISED = [
    ("https://example.com", "https://example.com/"),
    ("  https://example.com/a \n", "https://example.com/a"),
    ("HtTpS://EXAMPLE.Com/Path/File", "https://example.com/Path/File"),
    ("http://example.com:80/", "http://example.com/"),
    ("https://example.com:443/", "https://example.com/"),
    ("http://example.com:443/", "http://example.com:443/"),
    ("https://example.com:80/", "https://example.com:80/"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("https://user:secret@example.com/", "https://example.com/"),
    ("https://user@example.com:8080/", "https://example.com:8080/"),
    ("https://example.com./a", "https://example.com/a"),
    ("https://bücher.example/", "https://xn--bcher-kva.example/"),
    ("https://BÜCHER.example/", "https://xn--bcher-kva.example/"),
    ("http://ex\u3002/", "http://ex/"),  # IDNA turns the ideographic full stop into a "."
    ("http://例え\uff0e/a", "http://xn--r8jz45g/a"),
    ("https://[2001:DB8::1]:8080/", "https://[2001:db8::1]:8080/"),
    ("https://example.com/a/./b/../c", "https://example.com/a/c"),
    ("https://example.com/a/b/..", "https://example.com/a/"),
    ("https://example.com/a/b/.", "https://example.com/a/b/"),
    ("https://example.com/../../a", "https://example.com/a"),
    ("https://example.com/a/%2E%2E/b", "https://example.com/b"),
    ("https://example.com/%7euser/%41%5a%61%7a%30%2d%2e%5f", "https://example.com/~user/AZaz0-._"),
    ("https://example.com/%2fa%3f", "https://example.com/%2Fa%3F"),
    ("https://example.com/%e2%82%ac", "https://example.com/%E2%82%AC"),
    ("https://example.com/a b", "https://example.com/a%20b"),
    ("https://example.com/é", "https://example.com/%C3%A9"),
    ("https://example.com/😀", "https://example.com/%F0%9F%98%80"),
    ("https://example.com/a\\b", "https://example.com/a%5Cb"),
    ("https://example.com/100%", "https://example.com/100%25"),
    ("https://example.com/%zz", "https://example.com/%25zz"),
    ("https://example.com/%25", "https://example.com/%25"),
    # a decoded character never joins a preceding "%" into a new escape
    ("https://example.com/%a%41", "https://example.com/%25aA"),
    ("https://example.com/%%34%31", "https://example.com/%2541"),
    ("https://example.com/%2%35", "https://example.com/%2525"),
    ("https://example.com/?q=%a%41", "https://example.com/?q=%25aA"),
    ("https://example.com/?", "https://example.com/"),
    ("https://example.com?x=1", "https://example.com/?x=1"),
    ("https://example.com/a?b=c&d=%41%2b#frag", "https://example.com/a?b=c&d=A%2B"),
    ("https://example.com/a?q=é x", "https://example.com/a?q=%C3%A9%20x"),
    ("https://example.com/a#frag", "https://example.com/a"),
    ("https://example.com/#", "https://example.com/"),
    ("https://example.com/a;p=1/b@c:d!$&'()*+,=", "https://example.com/a;p=1/b@c:d!$&'()*+,="),
]


@pytest.mark.parametrize(("raw", "normal"), NORMALISED, ids=[r for r, _ in NORMALISED])
def test_normalisation(raw: str, normal: str) -> None:
    assert normalise_url(raw) == normal
    assert normalise_url(normal) == normal
    assert canonical_value("url", raw) == normal
    check_value("url", normal)
    assert SignalBody("url", normal).value == normal


@pytest.mark.parametrize(("raw", "normal"), [p for p in NORMALISED if p[0] != p[1]])
def test_a_url_that_is_not_normalised_is_no_signal_value(raw: str, normal: str) -> None:
    with pytest.raises(InvalidHashError) as raised:
        SignalBody("url", raw)
    assert raised.value.context.field == "value"
    assert raised.value.context.expected == normal


REJECTED = [
    "",
    "   ",
    "example.com/path",
    "//example.com/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "mailto:a@example.com",
    "https://",
    "https:///path",
    "https://:8080/",
    "https://./",
    "https://example.com:99999/",
    "https://example.com:port/",
    "https://[::1/",
    "https://exa mple.com/",
    "https://bü..cher.example/",
    "http://\u3002/",
    "http://ex\uff61\uff61/",
    "https://example.com/" + "a" * (MAX_URL_CHARS - len("https://example.com/") + 1),
    "https://example.com/" + " " * 700 + "x",  # too long once escaped
]


@pytest.mark.parametrize("raw", REJECTED, ids=[r[:40] for r in REJECTED])
def test_rejected(raw: str) -> None:
    with pytest.raises(InvalidHashError) as raised:
        normalise_url(raw)
    assert raised.value.context.field == "value"


def test_longest_url() -> None:
    longest = "https://example.com/" + "a" * (MAX_URL_CHARS - len("https://example.com/"))
    assert len(longest) == MAX_URL_CHARS
    assert normalise_url(longest) == longest


url_chars = st.one_of(
    st.sampled_from(list("aZ09-._~:/?#[]@!$&'()*+,;=% \\\"<>{}|^`\t")),
    st.sampled_from(["%41", "%2f", "%2F", "%7e", "%e2%82%ac", "%zz", "%", "%a", "%4", "..", "."]),
    st.characters(codec="utf-8"),
)
hosts = st.one_of(
    st.sampled_from(["example.com", "EXAMPLE.com.", "bücher.example", "[2001:db8::1]", "1.2.3.4"]),
    st.text(st.sampled_from(list("abcXYZ019-.é\u3002\uff0e\uff61")), min_size=1, max_size=12),
)
urls = st.builds(
    lambda scheme, user, host, port, path, query, fragment: (
        f"{scheme}://{user}{host}{port}{path}{query}{fragment}"
    ),
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    st.sampled_from(["", "user@", "u:p@"]),
    hosts,
    st.sampled_from(["", ":80", ":443", ":8080", ":0"]),
    st.lists(url_chars, max_size=12).map(lambda parts: "/" + "".join(parts)),
    st.sampled_from(["", "?", "?a=b", "?q=%41 é", "?x=%2f"]),
    st.sampled_from(["", "#", "#frag"]),
)


@settings(max_examples=depth(1000), deadline=None)
@given(st.one_of(urls, st.text(max_size=40)))
def test_normalisation_is_idempotent_or_rejects(raw: str) -> None:
    try:
        normal = normalise_url(raw)
    except InvalidHashError:
        return
    assert normalise_url(normal) == normal
    assert normal.startswith(("http://", "https://"))
    assert normal.isascii()
    assert len(normal) <= MAX_URL_CHARS
    assert "#" not in normal
    check_value("url", normal)
