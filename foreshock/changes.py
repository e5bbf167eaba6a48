"""Change messages (deploys, configuration, flags) read into change records.

A change topic carries one JSON `ChangeEvent` per message (see
`foreshock.schema`). Its messages skip the windows: the flow sends them
straight to the correlator. A message that is not a valid change becomes a
dead letter with the reason, like any bad input.
"""

from __future__ import annotations

from pydantic import ValidationError

from connectors.messages import RawMessage
from foreshock.decode import CHANGE_FORMAT, Rejection, to_dead_letter
from foreshock.records import Change, DeadLetter, stable_id
from foreshock.schema import ChangeEvent

__all__ = ["CHANGE_FORMAT", "read_change"]


def read_change(message: RawMessage) -> Change | DeadLetter | None:
    """The change in `message`; None for a tombstone, which carries nothing."""
    if message.value is None:
        return None
    try:
        event = ChangeEvent.model_validate_json(message.value)
    except ValidationError as error:
        reason = "json_decode_error" if _not_json(error) else "schema"
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(message)'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        return to_dead_letter(message, Rejection(reason, detail))
    return Change(
        id=stable_id("change", event.service, event.time.isoformat(), event.version),
        time=event.time,
        layer=event.layer,
        service=event.service,
        change_type=event.change_type,
        version=event.version,
        description=event.description,
    )


def _not_json(error: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in error.errors())
