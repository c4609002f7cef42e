"""Labels: lowercase tokens that say why a hash is in the list, and the federation taxonomy.

A label is ``[a-z0-9][a-z0-9._:-]{0,63}``; a record carries at most 16, sorted and distinct.
A taxonomy entry ending in ``:`` admits every label with that prefix (``entity:``), any other
entry admits exactly itself. An empty taxonomy admits every well-formed label.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from protocol.errors import InvalidLabelError

MAX_LABELS = 16
LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")

DEFAULT_TAXONOMY: tuple[str, ...] = (
    "behaviour:glorification",
    "behaviour:graphic-violence",
    "behaviour:imminent-threat",
    "behaviour:recruitment-instruction",
    "entity:",
    "incident:",
)


def check_labels(labels: object, field: str = "labels") -> tuple[str, ...]:
    """The labels as a tuple, if they are a sorted, distinct list of valid labels."""
    if not isinstance(labels, list | tuple) or len(labels) > MAX_LABELS:
        raise InvalidLabelError(
            f"labels must be a list of at most {MAX_LABELS}", field=field, actual=labels
        )
    previous = ""
    for label in labels:
        if type(label) is not str or LABEL_PATTERN.fullmatch(label) is None:
            raise InvalidLabelError(
                "invalid label", field=field, expected=LABEL_PATTERN.pattern, actual=label
            )
        if label <= previous:
            raise InvalidLabelError(
                "labels must be sorted and distinct", field=field, actual=",".join(labels)
            )
        previous = label
    return tuple(labels)


def normalise_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """User input to the record form: stripped, lower-cased, sorted, distinct, then checked."""
    return check_labels(sorted({label.strip().lower() for label in labels}))


def check_taxonomy(taxonomy: object) -> tuple[str, ...]:
    """A taxonomy is a sorted, distinct list of labels and label prefixes (ending in ':')."""
    if not isinstance(taxonomy, list | tuple) or len(taxonomy) > 1024:
        raise InvalidLabelError("taxonomy must be a list", field="taxonomy")
    for entry in taxonomy:
        if not isinstance(entry, str) or LABEL_PATTERN.fullmatch(entry) is None:
            raise InvalidLabelError("invalid taxonomy entry", field="taxonomy", actual=entry)
    if any(a >= b for a, b in itertools.pairwise(taxonomy)):
        raise InvalidLabelError("taxonomy must be sorted and distinct", field="taxonomy")
    return tuple(taxonomy)


def in_taxonomy(label: str, taxonomy: Sequence[str]) -> bool:
    if not taxonomy:
        return True
    return any(label == e or (e.endswith(":") and label.startswith(e)) for e in taxonomy)


def check_in_taxonomy(labels: Sequence[str], taxonomy: Sequence[str]) -> None:
    for label in labels:
        if not in_taxonomy(label, taxonomy):
            raise InvalidLabelError(
                "label is not in the federation's taxonomy",
                field="labels",
                expected=" ".join(taxonomy),
                actual=label,
            )
