"""Data point attributes as the string labels of a metric sample.

A label is an attribute's value as text: strings as they are, numbers and
booleans by `str`, arrays, maps and bytes by their protobuf text form. An
attribute with no value at all is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["LabelKey", "LabelReader", "Labels"]

Labels = dict[str, str]
# The labels sorted by name, written out: the part of a series key that
# labels make. A string keeps its hash once computed, and the same string is
# handed out for the same labels, so series lookups do not hash them again.
LabelKey = str
_SCALARS = ("int_value", "double_value", "bool_value")


class LabelReader:
    """Reads labels, remembering each distinct set of attributes.

    A Collector exports the same few attribute sets of a metric in every
    message, so a set read before costs only reading its pairs and one
    lookup, not a new dictionary and its sorted key. The labels handed out
    for one set are one dictionary, shared: readers must not change it. The
    memory is emptied whenever it reaches `limit` sets.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: dict[tuple[tuple[str, str], ...], tuple[Labels, LabelKey]] = {}

    def read(self, pairs: Sequence[KeyValue]) -> tuple[Labels, LabelKey]:
        """The labels of these attributes, and their series key."""
        items = []
        # By index: iterating a protobuf repeated field costs more than
        # indexing it, for the few attributes a point has.
        for i in range(len(pairs)):
            pair = pairs[i]
            value = pair.value
            # Most attributes are strings: their text is read without first
            # asking which member is set, which costs as much again.
            text = value.string_value
            if not text:
                found = _text(value)
                if found is None:
                    continue
                text = found
            items.append((pair.key, text))
        seen = tuple(items)

        known = self._known.get(seen)
        if known is not None:
            return known
        if len(self._known) >= self._limit:
            self._known.clear()
        labels = dict(seen)
        known = self._known[seen] = (labels, repr(sorted(labels.items())))
        return known


def _text(value: AnyValue) -> str | None:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return ""
    if kind in _SCALARS:
        return str(getattr(value, kind))
    return str(getattr(value, kind)).strip()
