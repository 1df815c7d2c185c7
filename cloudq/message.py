"""The task message: a frozen, versioned envelope, and how it is framed on the wire.

A body on the queue is a JSON object in one of three frames:

* plain: the envelope itself, ``{"v": 1, "id": ..., "task": ..., "args": [...], ...}``;
* compressed: ``{"v": 1, "id": ..., "task": ..., "gzip": "<base64 of the plain JSON>"}``;
* claim check: ``{"v": 1, "id": ..., "task": ..., "s3": {"bucket": ..., "key": ...}}`` when the
  body is over ``message_size_limit``; the S3 object holds a plain or compressed frame.

With a ``signing_key`` every frame carries ``"sig"``: HMAC-SHA256 over the frame's canonical
JSON without ``"sig"``. A signature is checked before anything else is read from the frame, and
``previous_keys`` (key rotation) verify but never sign. This module does no I/O: fetching claim
checks is the caller's job.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from cloudq.errors import DecodeError, SignatureError
from cloudq.redaction import cut, quote

VERSION: Literal[1] = 1
BEAT_NAMESPACE = uuid.UUID("5b0c39f1-7d3e-4c1a-9a57-1f3c2e6d8b40")
"""Task ids of periodic ticks are uuid5(BEAT_NAMESPACE, "<schedule name>@<tick time>")."""
TEMPLATE_HEADERS = ("periodic_task_name", "periodic_tick")
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
"""What EventBridge Scheduler replaces with a tick's scheduled time in a target's input."""


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def tick_text(at: datetime) -> str:
    """A tick's time as it appears in task ids: UTC, ISO-8601, ``Z``."""
    at = at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds" if at.microsecond else "seconds") \
        .replace("+00:00", "Z")


def tick_id(name: str, at: datetime) -> str:
    """The task id of schedule ``name``'s tick at ``at``: the same in every beat and in
    EventBridge, so a tick sent twice is one task."""
    return str(uuid.uuid5(BEAT_NAMESPACE, f"{name}@{tick_text(at)}"))


class Envelope(BaseModel):
    """One task invocation. Arguments are held in their JSON form (``cloudq.serialization``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    task: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    """The logical queue the message was routed to (used when it is re-sent)."""
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = Field(default=0, ge=0)
    priority: int | None = Field(default=None, ge=0, le=9)
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    message_group_id: str | None = None
    chain: list[dict[str, Any]] = Field(default_factory=list)
    """The steps after this one (frozen signature dicts), run with its return value."""
    chord: dict[str, Any] | None = None
    """``{"id", "index", "size"}``: the chord join the result of this task (or of the chain
    it starts) counts in."""
    link: list[dict[str, Any]] = Field(default_factory=list)
    link_error: list[dict[str, Any]] = Field(default_factory=list)
    headers: dict[str, Any] = Field(default_factory=dict)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    compression: Literal["gzip"] | None = None
    sent_at: datetime = Field(default_factory=utcnow)

    def replace(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` applied (validated)."""
        return Envelope.model_validate({**self.model_dump(), **changes})

    def countdown_s(self, now: datetime | None = None) -> float:
        """Seconds until the ETA (0 when there is none or it has passed)."""
        if self.eta is None:
            return 0.0
        return max(0.0, (self.eta - (now or utcnow())).total_seconds())

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires


class ClaimCheck(BaseModel):
    """Where the real body of an oversized message lives."""

    model_config = ConfigDict(frozen=True)

    id: str
    task: str
    bucket: str
    key: str


def as_utc(
    value: datetime | float | timedelta | None, now: datetime | None = None
) -> datetime | None:
    """Normalise an eta/expires given as datetime, seconds from now, or timedelta, to UTC."""
    if value is None:
        return None
    now = now or utcnow()
    if isinstance(value, timedelta):
        return now + value
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive datetimes are taken as UTC, as Celery does with utc on
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return now + timedelta(seconds=float(value))


# -- framing ------------------------------------------------------------------------------------
def _canonical(frame: dict[str, Any]) -> bytes:
    beat = frame.get("beat")
    if isinstance(beat, dict):  # a template: EventBridge fills in the time after it was signed
        frame = {**frame, "beat": {**beat, "at": SCHEDULED_TIME}}
    return json.dumps(frame, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sign(frame: dict[str, Any], key: str | None) -> dict[str, Any]:
    if key:
        frame["sig"] = hmac.new(key.encode(), _canonical(frame), hashlib.sha256).hexdigest()
    return frame


def _verify(frame: dict[str, Any], key: str | None, previous_keys: Sequence[str] = ()) -> None:
    sig = frame.pop("sig", None)  # dropped even unchecked: a signed body is still a valid body
    if not key:
        return
    if not isinstance(sig, str):
        raise SignatureError("message is not signed, but this worker requires signed messages")
    try:
        canonical = _canonical(frame)
    except RecursionError as exc:  # unverifiable, so nothing in it may be trusted
        raise SignatureError("message is nested too deep for its signature to be checked"
                             ) from exc
    for candidate in (key, *previous_keys):  # every key is tried: no timing tells which matched
        expected = hmac.new(candidate.encode(), canonical, hashlib.sha256).hexdigest()
        if hmac.compare_digest(sig, expected):
            return
    raise SignatureError("message signature does not match the signing key"
                         + (" or a previous key" if previous_keys else ""))


def encode(envelope: Envelope, *, signing_key: str | None = None) -> str:
    """Frame an envelope as a queue body (compressed if ``envelope.compression`` says so)."""
    plain = envelope.model_dump(mode="json", exclude_defaults=False)
    if envelope.compression == "gzip":
        packed = gzip.compress(json.dumps(plain, separators=(",", ":")).encode(), mtime=0)
        frame: dict[str, Any] = {
            "v": VERSION, "id": envelope.id, "task": envelope.task,
            "gzip": base64.b64encode(packed).decode("ascii"),
        }
    else:
        frame = plain
    return json.dumps(_sign(frame, signing_key), separators=(",", ":"), ensure_ascii=False)


def encode_template(envelope: Envelope, name: str, *, at: str = SCHEDULED_TIME,
                    expires_s: float | None = None, signing_key: str | None = None) -> str:
    """A body for EventBridge to send on each tick of schedule ``name``: the envelope without
    its id and times, which :func:`decode` derives from the tick's time (``at``, filled in by
    EventBridge) when the message arrives."""
    frame = envelope.model_dump(mode="json", exclude={"id", "root_id", "sent_at", "eta",
                                                      "expires", "compression"})
    frame["headers"] = {key: value for key, value in frame["headers"].items()
                        if key not in TEMPLATE_HEADERS}  # decode sets them from the tick
    frame["beat"] = {"name": name, "at": at}
    if expires_s is not None:
        frame["beat"]["expires_s"] = expires_s
    return json.dumps(_sign(frame, signing_key), separators=(",", ":"), ensure_ascii=False)


def _from_template(frame: dict[str, Any]) -> dict[str, Any]:
    beat = frame.pop("beat")
    try:
        name, at_text = beat["name"], beat["at"]
        at = datetime.fromisoformat(at_text)
        expires_s = beat.get("expires_s")
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"bad periodic task template {quote(beat)}: {cut(str(exc))}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    task_id = tick_id(name, at)
    headers = frame.get("headers") or {}
    if not isinstance(headers, dict):
        raise DecodeError("bad periodic task template: headers must be an object, not "
                          f"{quote(headers)}")
    return {
        **frame, "id": task_id, "root_id": task_id, "sent_at": at,
        "headers": {**headers, **dict(zip(TEMPLATE_HEADERS, (name, tick_text(at)), strict=True))},
        "expires": at + timedelta(seconds=float(expires_s)) if expires_s is not None else None,
    }


def claim_check(envelope: Envelope, bucket: str, key: str, *, signing_key: str | None) -> str:
    """The small body that points at an oversized one stored in S3."""
    frame = {"v": VERSION, "id": envelope.id, "task": envelope.task,
             "s3": {"bucket": bucket, "key": key}}
    return json.dumps(_sign(frame, signing_key), separators=(",", ":"))


def _parse(body: str | bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"message body is not JSON: {cut(str(exc))}") from exc
    except RecursionError as exc:
        raise DecodeError("message body is nested too deep to be parsed") from exc


def decode(body: str | bytes, *, signing_key: str | None = None,
           previous_keys: Sequence[str] = ()) -> Envelope | ClaimCheck:
    """Parse a queue body into an envelope, or the claim check to fetch it with.

    With a ``signing_key`` the signature is checked first: a forged body is a
    :class:`SignatureError` whatever else is wrong with it, so nothing in it is trusted."""
    frame = _parse(body)
    if not isinstance(frame, dict):
        if signing_key:
            raise SignatureError(f"message body is a JSON {type(frame).__name__}, not a "
                                 "signed object")
        raise DecodeError(f"message body is a JSON {type(frame).__name__}, not an object")
    _verify(frame, signing_key, previous_keys)
    if frame.get("v") != VERSION:
        raise DecodeError(f"unsupported message version {quote(frame.get('v'))} "
                          f"(expected {VERSION})")
    if "beat" in frame and "id" not in frame:
        frame = _from_template(frame)
    if "s3" in frame:
        ref = frame["s3"]
        try:
            return ClaimCheck(id=frame["id"], task=frame["task"], bucket=ref["bucket"],
                              key=ref["key"])
        except (KeyError, TypeError, PydanticValidationError) as exc:
            raise DecodeError(f"bad claim check: {cut(str(exc))}") from exc
    if "gzip" in frame:
        try:
            frame = json.loads(gzip.decompress(base64.b64decode(frame["gzip"])))
        except (OSError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad gzip payload: {cut(str(exc))}") from exc
        except RecursionError as exc:
            raise DecodeError("compressed message body is nested too deep to be parsed") from exc
    try:
        return Envelope.model_validate(frame)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{cut('.'.join(str(p) for p in e['loc']), 80)}: {cut(e['msg'], 80)}"
            for e in exc.errors()[:5]
        )
        raise DecodeError(f"invalid task message: {problems}") from exc


def peek(body: str | bytes) -> tuple[str | None, str | None]:
    """Best-effort (task id, task name) of a body that may not decode, for poison reports."""
    try:
        frame = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(frame, dict):
        return None, None
    task_id, name = frame.get("id"), frame.get("task")
    return (task_id if isinstance(task_id, str) else None,
            name if isinstance(name, str) else None)
