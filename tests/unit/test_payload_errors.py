"""Claim checks whose body cannot be fetched (issue 11: 5): a missing object or bucket is poison,
an unreachable, throttled or denied bucket is passing (the message comes back), except on
its last delivery. S3 is scripted here; tests/integration/test_large_outcomes.py uses moto."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import cloudq
from cloudq import message as wire
from cloudq import states
from cloudq.errors import PayloadMissing, TransportError
from cloudq.payloads import S3Payloads
from cloudq.runners.execute import Outcome, process_message
from cloudq.sending import build_envelope
from cloudq.transports.base import OutgoingMessage, ReceivedMessage


class ScriptedS3:
    """``get_object`` fails with one S3 error code (or cannot connect)."""

    def __init__(self, code: str | None, status: int = 400) -> None:
        self.code, self.status = code, status
        self.calls = 0

    def get_object(self, Bucket: str, Key: str) -> Any:
        self.calls += 1
        if self.code is None:
            raise EndpointConnectionError(endpoint_url=f"https://{Bucket}.s3.example")
        raise ClientError({"Error": {"Code": self.code, "Message": self.code},
                           "ResponseMetadata": {"HTTPStatusCode": self.status}}, "GetObject")


def payloads(code: str | None, status: int = 400) -> S3Payloads:
    return S3Payloads(SimpleNamespace(s3=ScriptedS3(code, status)), "bucket")  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "says"), [("NoSuchKey", "expired or deleted"),
                                            ("NoSuchBucket", "no bucket 'bucket'")])
def test_a_missing_object_or_bucket_is_payload_missing(code: str, says: str) -> None:
    with pytest.raises(PayloadMissing, match=rf"s3://bucket/payloads/k does not exist.*{says}"):
        payloads(code).get("payloads/k")


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500),
                                              ("AccessDenied", 403), (None, 0)])
def test_an_unreachable_throttled_or_denied_bucket_is_a_transport_error(
    code: str | None, status: int,
) -> None:
    with pytest.raises(TransportError, match="s3://bucket/payloads/k"):
        payloads(code, status).get("payloads/k")


def test_access_denied_names_the_permission_and_the_missing_object_case() -> None:
    with pytest.raises(TransportError, match=r"s3:GetObject on payloads/\*.*does not exist"):
        payloads("AccessDenied", 403).get("payloads/k")


# -- what the worker does with them -------------------------------------------------------------
@pytest.fixture
def claim_checked(app: cloudq.App, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Send a claim check to ``bucket``, whose S3 answers with ``code``; the received message."""
    app.task(name="shop.big")(lambda blob: len(blob))

    def send(code: str | None, status: int = 400) -> tuple[wire.Envelope, ReceivedMessage]:
        monkeypatch.setattr(app, "payloads", lambda bucket: payloads(code, status))
        envelope = build_envelope(app, "shop.big", ("x",), {})
        app.transport.send("default", OutgoingMessage(
            body=wire.claim_check(envelope, "bucket", "payloads/k", signing_key=None)))
        [message] = app.transport.receive("default")
        return envelope, message

    return send


def test_a_claim_check_to_a_missing_object_is_poison(app: cloudq.App, claim_checked: Any,
                                                     dead_letters: Any) -> None:
    envelope, message = claim_checked("NoSuchKey")

    disposition = process_message(app, message)

    assert disposition.outcome is Outcome.POISON and disposition.ack
    assert app.backend.get(envelope.id).state == states.FAILURE
    [dead] = dead_letters(app)
    assert "s3://bucket/payloads/k does not exist" in dead.attributes["cloudq-reason"]


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("AccessDenied", 403),
                                              (None, 0)])
def test_an_unreachable_bucket_leaves_the_message_to_come_back(
    app: cloudq.App, claim_checked: Any, dead_letters: Any, code: str | None, status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    envelope, message = claim_checked(code, status)

    with pytest.raises(TransportError):
        process_message(app, message)

    assert app.backend.get(envelope.id).state == states.PENDING
    assert dead_letters(app) == []
    assert "will be delivered again (delivery 1 of 5)" in caplog.text
    assert envelope.id in caplog.text


def test_on_its_last_delivery_an_unreachable_payload_is_dead_lettered_with_the_reason(
    app: cloudq.App, claim_checked: Any, dead_letters: Any,
) -> None:
    envelope, message = claim_checked("SlowDown", 503)
    message.receive_count = app.settings.max_receive_count

    disposition = process_message(app, message)

    assert disposition.outcome is Outcome.POISON
    assert app.backend.get(envelope.id).state == states.FAILURE
    [dead] = dead_letters(app)
    assert dead.attributes["cloudq-reason"].startswith("TransportError: S3 GetObject")
