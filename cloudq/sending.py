"""From ``apply_async`` arguments to bodies on queues: build, check, route, encode, send.

Everything up to :func:`encode_for_queue` is I/O-free, so bad input fails in the caller
before any request is made: unknown options, arguments that are not JSON, arguments that do
not fit the task's annotations, countdowns on FIFO queues, bodies too large to send.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from cloudq import message as wire
from cloudq.errors import EncodeError, ValidationError
from cloudq.redaction import quote
from cloudq.routing import band_queue
from cloudq.serialization import to_jsonable
from cloudq.task import _current_request
from cloudq.transports.base import MAX_DELAY_S, OutgoingMessage, is_fifo

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.task import Task

logger = logging.getLogger(__name__)

IGNORED_CELERY_OPTIONS = frozenset(
    {"exchange", "routing_key", "retry", "retry_policy", "serializer", "shadow", "producer",
     "connection", "add_to_parent", "publisher", "exchange_type", "delivery_mode", "mandatory"}
)
ENVELOPE_OPTIONS = frozenset({"time_limit", "soft_time_limit"})
ETA_TOLERANCE_S = 0.01


def signature_dicts(app: App, value: Any) -> list[dict[str, Any]]:
    """``link=``/``link_error=`` values (signatures, dicts, or lists of them) as dicts.

    A linked chain, group or chord is normalised and frozen now, like one sent directly, so
    the worker that sends it only has to expand it."""
    from cloudq.canvas.apply import freeze, normalize
    from cloudq.canvas.signature import Signature

    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Signature):
            linked = normalize(item.clone())
            freeze(app, linked)
            out.append(linked.to_dict())
        elif isinstance(item, Mapping):
            out.append(dict(item))
        else:
            raise ValidationError(f"link/link_error takes signatures, got {quote(item)}")
    return out


def build_envelope(  # noqa: C901 - one linear pass over apply_async's options
    app: App,
    name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    *,
    task: Task[Any, Any] | None = None,
    task_id: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | timedelta | datetime | None = None,
    queue: str | None = None,
    priority: int | None = None,
    link: Any = None,
    link_error: Any = None,
    headers: Mapping[str, Any] | None = None,
    compression: str | None = None,
    message_group_id: str | None = None,
    retries: int = 0,
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    chain: list[dict[str, Any]] | None = None,
    chord: dict[str, Any] | None = None,
    **options: Any,
) -> wire.Envelope:
    """Everything ``apply_async`` does before I/O. Raises on any bad input."""
    unknown = set(options) - IGNORED_CELERY_OPTIONS - ENVELOPE_OPTIONS
    if unknown:
        raise ValidationError(f"apply_async() got unknown option(s): {', '.join(sorted(unknown))}")
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValidationError(f"{name}: kwargs must be a dict with str keys")
    if task is None:
        task = app.tasks.get(name)
    show = app.settings.log_argument_values
    if task is not None and task.typing:
        task.arguments.check(args, kwargs, show_values=show)
    json_args = to_jsonable(list(args), "args", show_values=show)
    json_kwargs = to_jsonable(kwargs, "kwargs", show_values=show)

    settings = app.settings
    route = app.router.route(name, args, kwargs, {"queue": queue, "priority": priority})
    queue = queue or (task.queue if task else None) or (route or {}).get("queue") \
        or settings.task_default_queue
    if priority is None:
        priority = (task.priority if task else None)
        if priority is None:
            priority = (route or {}).get("priority", settings.task_default_priority)
    if countdown is not None and eta is not None:
        raise ValidationError(f"{name}: give countdown or eta, not both")
    now = wire.utcnow()
    eta_at = wire.as_utc(countdown if countdown is not None else eta, now)
    if expires is None and task is not None:
        expires = task.expires
    if is_fifo(queue):
        if eta_at is not None and eta_at > now:
            raise ValidationError(
                f"{name}: countdown/eta cannot be used on FIFO queue {queue!r}: "
                "FIFO queues have no per-message delay"
            )
        message_group_id = message_group_id or queue
    elif message_group_id is not None:
        raise ValidationError(
            f"{name}: message_group_id is only for FIFO queues (names ending in .fifo), "
            f"not {queue!r}"
        )
    current = _current_request.get()
    parent = current[1] if current else None
    if parent is not None and parent_id is None:
        parent_id = parent.id
        root_id = root_id or parent.root_id or parent.id
    compression = compression or (task.compression if task else None) or settings.task_compression
    if compression not in (None, "gzip"):
        raise ValidationError(f"{name}: compression must be 'gzip' or None, not {compression!r}")
    gzip: Literal["gzip"] | None = "gzip" if compression else None
    try:
        envelope = wire.Envelope(
            id=task_id or wire.new_id(), task=name, args=json_args, kwargs=json_kwargs,
            queue=band_queue(queue, priority), eta=eta_at, expires=wire.as_utc(expires, now),
            retries=retries, priority=priority, root_id=root_id, parent_id=parent_id,
            group_id=group_id, message_group_id=message_group_id,
            chain=list(chain or []), chord=chord,
            link=signature_dicts(app, link), link_error=signature_dicts(app, link_error),
            headers=to_jsonable(dict(headers or {}), "headers"),
            time_limit=options.get("time_limit"), soft_time_limit=options.get("soft_time_limit"),
            compression=gzip, sent_at=now,
        )
    except ValueError as exc:  # pydantic: out-of-range priority and the like
        raise ValidationError(f"{name}: {exc}") from exc
    return envelope if envelope.root_id else envelope.replace(root_id=envelope.id)


@dataclass(frozen=True)
class Prepared:
    """An envelope encoded for its queue, and the S3 object to write first if it is large."""

    queue: str
    outgoing: OutgoingMessage
    payload: tuple[str, str, str] | None = None  # (bucket, key, body)


def delay_for(envelope: wire.Envelope) -> int:
    """SQS DelaySeconds for an envelope: its countdown rounded up, at most 900 (then it hops)."""
    remaining = envelope.countdown_s()
    if remaining <= ETA_TOLERANCE_S:
        return 0
    return min(MAX_DELAY_S, math.ceil(remaining))


def encode_for_queue(app: App, envelope: wire.Envelope) -> Prepared:
    """Frame an envelope; bodies over ``message_size_limit`` become S3 claim checks."""
    settings = app.settings
    queue = envelope.queue or settings.task_default_queue
    body = wire.encode(envelope, signing_key=settings.signing_key)
    payload = None
    size = len(body.encode())
    if size > settings.message_size_limit:
        if not settings.payload_bucket:
            raise EncodeError(
                f"{envelope.task}[{envelope.id}]: message is {size} bytes, over "
                f"message_size_limit={settings.message_size_limit}; set payload_bucket to send "
                "large arguments through S3"
            )
        key = f"payloads/{envelope.id}/{wire.new_id()}.json"
        payload = (settings.payload_bucket, key, body)
        body = wire.claim_check(envelope, settings.payload_bucket, key,
                                signing_key=settings.signing_key)
    fifo = is_fifo(queue)
    outgoing = OutgoingMessage(
        body=body,
        delay_s=0 if fifo else delay_for(envelope),
        group_id=envelope.message_group_id if fifo else None,
        dedup_id=(envelope.id if envelope.retries == 0 else f"{envelope.id}-{envelope.retries}")
        if fifo else None,
    )
    return Prepared(queue=queue, outgoing=outgoing, payload=payload)


@dataclass(frozen=True)
class Outbox:
    """What sending some envelopes takes: S3 objects to write first, then bodies per queue."""

    payloads: list[tuple[str, str, str]]
    by_queue: dict[str, list[OutgoingMessage]]


def outbox(app: App, envelopes: Sequence[wire.Envelope]) -> Outbox:
    """Encode envelopes for sending (I/O-free; encoding errors raise here, before any I/O)."""
    prepared = [encode_for_queue(app, envelope) for envelope in envelopes]
    by_queue: dict[str, list[OutgoingMessage]] = defaultdict(list)
    for item in prepared:
        by_queue[item.queue].append(item.outgoing)
    return Outbox([item.payload for item in prepared if item.payload is not None],
                  dict(by_queue))


def publish(app: App, envelopes: Sequence[wire.Envelope]) -> None:
    """Send envelopes, batching per queue (10 per call). Encoding errors raise before any I/O."""
    box = outbox(app, envelopes)
    for bucket, key, body in box.payloads:
        app.payloads(bucket).put(key, body)
    for queue, outgoing in box.by_queue.items():
        if len(outgoing) == 1:
            app.transport.send(queue, outgoing[0])
        else:
            app.transport.send_batch(queue, outgoing)
    log_sent(envelopes)


def log_sent(envelopes: Sequence[wire.Envelope]) -> None:
    for envelope in envelopes:
        logger.debug("sent %s[%s] to %s", envelope.task, envelope.id, envelope.queue)
