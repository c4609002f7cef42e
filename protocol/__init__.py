"""hashmesh protocol core: pure, synchronous, sans-I/O.

The record format and every rule about it: canonical encoding, keys and signatures, record
kinds and signal types, hash chains and forks, membership, and the state fold. No I/O, no
clock, no randomness: time, keys and bytes are parameters. See ``protocol/SPEC.md``.
"""

from protocol.bodies import (
    AnnounceBody,
    Body,
    OpinionBody,
    RetractBody,
    RotateBody,
    SignalBody,
    VoteBody,
)
from protocol.chain import ForkEvidence, Head, check_successor, fork_evidence, verify_fork_evidence
from protocol.encoding import MAX_RECORD_BYTES, decode_canonical, encode_canonical
from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.federation import Federation, Founder, draft_genesis, parse_genesis, sign_genesis
from protocol.fold import State, fold_state
from protocol.keys import SigningKey, verify_signature
from protocol.membership import Member, Membership, derive_membership
from protocol.records import Record, decode_record, sign_record

__all__ = [
    "MAX_RECORD_BYTES",
    "AnnounceBody",
    "Body",
    "Federation",
    "ForkEvidence",
    "Founder",
    "Head",
    "LocalProtocolError",
    "Member",
    "Membership",
    "OpinionBody",
    "ProtocolError",
    "Record",
    "RemoteProtocolError",
    "RetractBody",
    "RotateBody",
    "SignalBody",
    "SigningKey",
    "State",
    "VoteBody",
    "check_successor",
    "decode_canonical",
    "decode_record",
    "derive_membership",
    "draft_genesis",
    "encode_canonical",
    "fold_state",
    "fork_evidence",
    "parse_genesis",
    "sign_genesis",
    "sign_record",
    "verify_fork_evidence",
    "verify_signature",
]
