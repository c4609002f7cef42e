"""Ed25519 keys and signatures: the only module that touches key bytes and PyNaCl.

Keys are made from a 32-byte seed that the caller supplies (the protocol core has no
randomness). Public keys, signatures and ids travel as lowercase hex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import nacl.bindings
import nacl.exceptions
import nacl.signing
from nacl._sodium import ffi as _ffi  # PyNaCl's own libsodium binding
from nacl._sodium import lib as _sodium

from protocol.errors import LocalProtocolError, SignatureError

SEED_BYTES = 32
PUBLIC_KEY_HEX_CHARS = 64
SIGNATURE_HEX_CHARS = 128

_PUBLIC_KEY = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")


def is_public_key(text: object) -> bool:
    """True if text is written as a public key is: 64 lowercase hex characters."""
    return isinstance(text, str) and _PUBLIC_KEY.fullmatch(text) is not None


def is_signature(text: object) -> bool:
    return isinstance(text, str) and _SIGNATURE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A member's Ed25519 key pair, made from its 32-byte seed."""

    seed: bytes = field(repr=False)
    public: str = field(init=False)
    _key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise LocalProtocolError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(self.seed)}")
        key = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "public", bytes(key.verify_key).hex())

    @classmethod
    def from_hex(cls, seed_hex: str) -> SigningKey:
        try:
            return cls(bytes.fromhex(seed_hex))
        except ValueError as e:
            raise LocalProtocolError("seed is not hex") from e

    def sign(self, message: bytes) -> str:
        """The detached signature of message, as 128 lowercase hex characters."""
        return self._key.sign(message).signature.hex()

    def sign_raw(self, message: bytes) -> bytes:
        return self._key.sign(message).signature


@lru_cache(maxsize=4096)
def _public_key_bytes(public: str) -> bytes:
    return bytes.fromhex(public)


def verify_signature(
    public: str,
    message: bytes,
    signature: str,
    *,
    record_id: str | None = None,
    seq: int | None = None,
) -> None:
    """Raise ``SignatureError`` unless signature is public's Ed25519 signature over message."""
    try:
        nacl.bindings.crypto_sign_open(
            bytes.fromhex(signature) + message, _public_key_bytes(public)
        )
    except (nacl.exceptions.CryptoError, ValueError) as e:
        raise SignatureError(
            "signature does not verify", author=public, seq=seq, record_id=record_id
        ) from e


def verify_signed(public: str, signed: bytes, *, record_id: str, seq: int) -> None:
    """Like ``verify_signature``, for a message already prefixed with its 64 signature bytes.

    The record decoder builds ``signature + message`` in one allocation, the form libsodium's
    ``crypto_sign_open`` takes. This calls PyNaCl's libsodium binding directly with NULL for
    the opened message and its length, which libsodium then does not write: the same
    verification, without allocating and copying the message back into Python.
    """
    try:
        key = _public_key_bytes(public)
    except ValueError:
        key = b""
    if len(key) != nacl.bindings.crypto_sign_PUBLICKEYBYTES or _sodium.crypto_sign_open(
        _ffi.NULL, _ffi.NULL, signed, len(signed), key
    ):
        raise SignatureError(
            "signature does not verify", author=public, seq=seq, record_id=record_id
        )
