"""The envelope on the wire: plain, gzip, signed and claim-check frames, and what bad bodies say."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from cloudq import message as wire
from cloudq.errors import DecodeError, SignatureError
from cloudq.message import ClaimCheck, Envelope, decode, encode, peek
from cloudq.serialization import to_jsonable

KEY = "s3cret-signing-key"


def sample(**changes: object) -> Envelope:
    return Envelope(
        task="shop.tasks.charge", args=to_jsonable([4, 6.5, "x"]),
        kwargs=to_jsonable({"when": datetime(2026, 1, 1, tzinfo=UTC)}),
        queue="payments", eta=datetime(2026, 1, 1, 0, 5, tzinfo=UTC), retries=2, priority=7,
        root_id="root-1", parent_id="parent-1", headers={"trace": "abc"},
        link=[{"task": "shop.tasks.notify", "args": [], "kwargs": {}, "options": {}}],
    ).replace(**changes)


def frame_of(body: str) -> dict[str, object]:
    frame = json.loads(body)
    assert isinstance(frame, dict)
    return frame


# -- frames ----------------------------------------------------------------------------------------
def test_plain_frame_round_trips_every_field() -> None:
    envelope = sample()

    body = encode(envelope)

    assert frame_of(body)["task"] == "shop.tasks.charge"
    assert decode(body) == envelope


def test_gzip_frame_is_compressed_and_round_trips() -> None:
    envelope = sample(args=["x" * 5000], compression="gzip")

    body = encode(envelope)

    frame = frame_of(body)
    assert set(frame) == {"v", "id", "task", "gzip"}
    assert len(body) < 1000
    assert decode(body) == envelope


def test_signed_frame_verifies_with_the_same_key() -> None:
    envelope = sample()

    body = encode(envelope, signing_key=KEY)

    assert isinstance(frame_of(body)["sig"], str)
    assert decode(body, signing_key=KEY) == envelope


def test_signed_gzip_frame_verifies() -> None:
    envelope = sample(compression="gzip")

    assert decode(encode(envelope, signing_key=KEY), signing_key=KEY) == envelope


def test_forged_body_fails_its_signature() -> None:
    frame = frame_of(encode(sample(), signing_key=KEY))
    frame["args"] = [1_000_000]  # tampered with after signing
    forged = json.dumps(frame)

    with pytest.raises(SignatureError, match="does not match"):
        decode(forged, signing_key=KEY)


def test_body_signed_with_another_key_fails() -> None:
    body = encode(sample(), signing_key="someone-else")

    with pytest.raises(SignatureError, match="does not match"):
        decode(body, signing_key=KEY)


def test_unsigned_body_is_refused_when_a_key_is_required() -> None:
    body = encode(sample())

    with pytest.raises(SignatureError, match="not signed"):
        decode(body, signing_key=KEY)


def test_signature_error_is_a_decode_error() -> None:
    assert issubclass(SignatureError, DecodeError)


def test_signed_body_is_accepted_by_a_worker_that_does_not_check_signatures() -> None:
    # Senders start signing before workers start requiring it: that rollout must not dead-letter.
    envelope = sample()

    assert decode(encode(envelope, signing_key=KEY)) == envelope


def test_claim_check_frame_decodes_to_where_the_body_lives() -> None:
    envelope = sample()

    body = wire.claim_check(envelope, "payload-bucket", "payloads/x.json", signing_key=KEY)

    check = decode(body, signing_key=KEY)
    assert check == ClaimCheck(id=envelope.id, task=envelope.task, bucket="payload-bucket",
                               key="payloads/x.json")


# -- bad bodies ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("this is not json", "message body is not JSON"),
        (b"\xff\xfe\x00garbage", "message body is not JSON"),
        ("[1, 2, 3]", "message body is a JSON list, not an object"),
        ('"just a string"', "message body is a JSON str, not an object"),
        ('{"v": 2, "id": "x", "task": "t"}', "unsupported message version 2 (expected 1)"),
        ('{"id": "x", "task": "t"}', "unsupported message version None"),
        ('{"v": 1, "id": "x"}', "invalid task message: task: Field required"),
        ('{"v": 1, "task": "t", "retries": -1}', "invalid task message: retries"),
        ('{"v": 1, "task": "t", "surprise": true}', "invalid task message: surprise"),
        ('{"v": 1, "id": "x", "task": "t", "gzip": "%%%"}', "bad gzip payload"),
        ('{"v": 1, "id": "x", "task": "t", "s3": {"bucket": "b"}}', "bad claim check"),
    ],
)
def test_bad_body_is_a_decode_error_naming_the_problem(body: str | bytes, problem: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(body)

    assert problem in str(caught.value)


def test_gzip_payload_that_is_not_gzip_is_a_decode_error() -> None:
    not_gzip = base64.b64encode(b"plain bytes").decode()

    with pytest.raises(DecodeError, match="bad gzip payload"):
        decode(json.dumps({"v": 1, "id": "x", "task": "t", "gzip": not_gzip}))


def test_gzip_payload_holding_a_bad_envelope_is_a_decode_error() -> None:
    packed = base64.b64encode(gzip.compress(b'{"v": 1, "args": "nope"}')).decode()

    with pytest.raises(DecodeError, match="invalid task message"):
        decode(json.dumps({"v": 1, "id": "x", "task": "t", "gzip": packed}))


# -- peek ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"v": 99, "id": "abc", "task": "shop.tasks.charge", "args": "junk"}',
         ("abc", "shop.tasks.charge")),
        ('{"id": 17, "task": "t"}', (None, "t")),
        ('{"id": "abc"}', ("abc", None)),
        ("[1]", (None, None)),
        ("not json", (None, None)),
        (b"\xff", (None, None)),
    ],
)
def test_peek_finds_what_it_can_in_a_body_that_may_not_decode(
    body: str | bytes, expected: tuple[str | None, str | None]
) -> None:
    assert peek(body) == expected


# -- envelope behaviour ----------------------------------------------------------------------------
def test_envelope_is_frozen() -> None:
    envelope = sample()

    with pytest.raises(ValueError, match="frozen"):
        envelope.retries = 5  # type: ignore[misc]


def test_replace_validates_the_changes() -> None:
    with pytest.raises(ValueError, match="priority"):
        sample().replace(priority=12)


def test_countdown_and_expiry_are_measured_from_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    envelope = sample(eta=now + timedelta(seconds=90), expires=now + timedelta(minutes=5))

    assert envelope.countdown_s(now) == 90
    assert envelope.countdown_s(now + timedelta(hours=1)) == 0
    assert not envelope.is_expired(now)
    assert envelope.is_expired(now + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (30, datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)),
        (timedelta(hours=2), datetime(2026, 1, 1, 2, tzinfo=UTC)),
        (datetime(2026, 5, 1, 12), datetime(2026, 5, 1, 12, tzinfo=UTC)),
        (datetime(2026, 5, 1, 14, tzinfo=UTC).astimezone(),
         datetime(2026, 5, 1, 14, tzinfo=UTC)),
        (None, None),
    ],
)
def test_as_utc_takes_seconds_timedeltas_and_datetimes(
    given: object, expected: datetime | None
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    result = wire.as_utc(given, now)  # type: ignore[arg-type]

    assert result == expected
    assert result is None or result.tzinfo is not None
