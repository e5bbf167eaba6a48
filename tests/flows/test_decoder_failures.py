"""A decoder that raises is a bug in the decoder, not in the data: the
message it failed on becomes a dead letter saying which decoder raised what,
and every other message of the batch still counts."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.messages import RawBatch, RawMessage
from flows.steps import WindowLogic
from foreshock.decode import Decoded, Scanned, decode_native
from foreshock.inspection import decode_lines
from foreshock.records import DeadLetter, KpiRecord
from foreshock.windows import WindowSpec, WindowStore, sample_of

DAY = datetime(2025, 3, 4, tzinfo=UTC)
SPEC = WindowSpec(60, 0, DAY)


def _request(second: int) -> bytes:
    return json.dumps(
        {
            "time": f"2025-03-04T10:00:{second:02d}Z",
            "layer": "backend",
            "service": "orders",
            "payload": {"kind": "http_request", "status": 200, "duration_ms": 20.0},
        }
    ).encode()


def _careless(data: bytes) -> Decoded:
    """Native events, except that it divides a text by a number on 'boom'."""
    if data == b"boom":
        return "boom" / 2  # type: ignore[operator, no-any-return]
    return decode_native(data)


class _CarelessScanner:
    """A sample decoder whose bulk path raises where its event path would not."""

    def __call__(self, data: bytes) -> Decoded:
        return decode_native(data)

    def scan(self, data: bytes) -> Scanned:
        if data == b"boom":
            raise KeyError("resourceMetrics")
        events, rejections = decode_native(data)
        return [sample_of(e) for e in events], rejections


def _batch(fmt: str) -> RawBatch:
    values = [_request(1), b"boom", _request(2)]
    messages = tuple(RawMessage("acme", 0, i, None, v) for i, v in enumerate(values))
    return RawBatch("acme:0", messages, fmt)


def _letters(items: list[object]) -> list[DeadLetter]:
    return [i for i in items if isinstance(i, DeadLetter)]


def _requests_per_s(items: list[object]) -> float | None:
    for record in items:
        if isinstance(record, KpiRecord) and record.kpi == "requests_per_s":
            return record.value
    return None


def test_a_decoder_that_raises_gives_a_dead_letter_and_the_batch_goes_on() -> None:
    logic = WindowLogic(WindowStore(spec=SPEC), {"acme": _careless})

    out, _ = logic.on_item(_batch("acme"))
    closed, _ = logic.on_eof()

    [letter] = _letters(list(out))
    assert (letter.reason, letter.topic, letter.offset) == ("decoder_failed", "acme", 1)
    assert "'acme' decoder failed: TypeError" in letter.detail
    # Two requests in a one-minute window.
    assert _requests_per_s(list(closed)) == 2 / 60


def test_a_sample_decoder_whose_scan_raises_gives_a_dead_letter() -> None:
    logic = WindowLogic(WindowStore(spec=SPEC), {"acme": _CarelessScanner()})

    out, _ = logic.on_item(_batch("acme"))

    [letter] = _letters(list(out))
    assert (letter.reason, letter.offset) == ("decoder_failed", 1)
    assert "KeyError: 'resourceMetrics'" in letter.detail


@pytest.mark.parametrize(
    ("result", "said"),
    [
        (None, "returned NoneType, not a pair (events, rejections)"),
        (([{"time": 1}], []), "returned events that are not a list of Event"),
        (([], ["too odd"]), "returned rejections that are not a list of Rejection"),
    ],
)
def test_a_decoder_that_returns_the_wrong_shape_gives_a_dead_letter(
    result: object, said: str
) -> None:
    def wrong(data: bytes) -> Decoded:
        return result if data == b"boom" else decode_native(data)  # type: ignore[return-value]

    logic = WindowLogic(WindowStore(spec=SPEC), {"acme": wrong})

    out, _ = logic.on_item(_batch("acme"))
    closed, _ = logic.on_eof()

    [letter] = _letters(list(out))
    assert (letter.reason, letter.offset) == ("decoder_failed", 1)
    assert said in letter.detail
    assert _requests_per_s(list(closed)) == 2 / 60


def test_the_decode_command_names_the_decoder_and_reads_on() -> None:
    lines = [_request(1), b"boom", _request(2)]

    outcomes = list(decode_lines(lines, _careless, name="acme"))

    assert [o["outcome"] for o in outcomes] == [
        "event",
        "dead_letter",
        "event",
        "summary",
    ]
    failed = outcomes[1]
    assert (failed["line"], failed["reason"]) == (2, "decoder_failed")
    assert "'acme' decoder failed: TypeError" in failed["detail"]


def test_the_decode_command_stops_quietly_when_its_reader_goes(tmp_path: Path) -> None:
    # Far more output than a pipe holds, so the writer meets the closed pipe.
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(_request(i % 60) for i in range(5000)) + b"\n")
    command = f"{sys.executable} -m foreshock.cli decode {path} | head -1"

    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["outcome"] == "event"
