"""URL normalisation for the ``url`` signal type (SPEC section 5.3).

Two members who flag the same page must produce the same value, so URLs are reduced to one
form before they are signed:

1. surrounding whitespace is removed; at most 2048 characters remain;
2. the scheme must be http or https and is written in lower case;
3. the host is required, lower-cased, IDNA-encoded (punycode) and loses a trailing dot;
4. user name and password are removed (they are credentials, not identity);
5. the port is removed when it is the scheme's default (80, 443);
6. the path has dot segments removed (RFC 3986 5.2.4) and is "/" when empty;
7. in path and query, percent-escapes of unreserved characters are decoded, other escapes
   are written with upper-case hex, and characters outside RFC 3986 are percent-encoded as UTF-8;
8. an empty query ("?") and the fragment are removed.
"""

from __future__ import annotations

import re
import urllib.parse

from protocol.errors import InvalidHashError

MAX_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ALLOWED = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=%")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_COMPONENT_TOKEN = re.compile(
    r"%([0-9A-Fa-f]{2})|[^" + re.escape("".join(sorted(_ALLOWED - {"%"}))) + "]", re.DOTALL
)


def _bad(reason: str, url: str) -> InvalidHashError:
    return InvalidHashError(f"not a valid URL: {reason}", field="value", actual=url)


def _normalise_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _normalise_token(match: re.Match[str]) -> str:
    if match.group(1) is not None:  # %XY
        return _normalise_escape(match)
    char = match.group()  # a "%" that starts no escape, or a character outside _ALLOWED
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))


def _normalise_component(text: str) -> str:
    # One left-to-right pass: a character decoded from an escape is never read again as part
    # of another escape ("%a%41" is "%25aA", not "%aA"), so normalising is idempotent.
    return _COMPONENT_TOKEN.sub(_normalise_token, text)


def _remove_dot_segments(path: str) -> str:
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(output) + ("/" if trailing and output else "")


def _normalise_host(host: str, url: str) -> str:
    host = host.lower().rstrip(".")
    if not host:
        raise _bad("no host", url)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise _bad("host is not a valid internationalised domain name", url) from e
        host = host.rstrip(".")  # IDNA maps U+3002 and friends to ".": "ex\u3002" is "ex."
        if not host:
            raise _bad("no host", url)
    if any(c.isspace() or c in "/\\@" for c in host):
        raise _bad("invalid character in host", url)
    return host


def normalise_url(value: str) -> str:
    """The canonical form of a URL; raises ``InvalidHashError`` if it is not an http(s) URL."""
    url = value.strip()
    if not url or len(url) > MAX_URL_CHARS:
        raise _bad(f"empty or longer than {MAX_URL_CHARS} characters", value)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _bad(str(e), value) from e
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _bad("scheme must be http or https", value)
    host = _normalise_host(parts.hostname or "", value)
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalise_component(parts.path or "/") or "/")
    if not path.startswith("/"):
        path = "/" + path
    query = _normalise_component(parts.query)
    result = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    if len(result) > MAX_URL_CHARS:
        raise _bad(f"longer than {MAX_URL_CHARS} characters once normalised", value)
    return result
