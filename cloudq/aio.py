"""The awaitable face: ``adelay``, ``aapply_async``, ``asend_task``, ``aget`` on aioboto3.

Only I/O lives here. What to send and how to read a result is the same I/O-free code the
blocking face uses (``cloudq.sending.build_envelope``/``outbox``, ``cloudq.transports.sqs_wire``,
``cloudq.results.ResultBackend.meta_from``, the canvas's ``freeze``/``expand``), so the two faces
cannot drift apart.

aioboto3 (``pip install 'cloudq[async]'``) is imported on first use, so ``import cloudq`` and the
blocking API work without it. Its clients are created lazily, one set per event loop (an
aiohttp session belongs to the loop that made it), and reused until ``await app.aclose()``.
An app on the in-memory twins (``cloudq.testing``) gets in-memory async twins instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cloudq.errors import ConfigError, StoreError, TransportError
from cloudq.stores.base import Item, is_expired
from cloudq.transports import sqs_wire as wire
from cloudq.transports.base import MAX_BATCH, OutgoingMessage, is_fifo

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.aws import AwsClients
    from cloudq.message import Envelope
    from cloudq.results import ResultMeta

logger = logging.getLogger(__name__)

SERVICES = ("sqs", "dynamodb", "s3")


class AsyncFace(Protocol):
    """What the awaitable API needs from AWS: send, read and write items, store payloads."""

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None: ...

    async def get_item(self, key: str) -> Item | None: ...

    async def get_items(self, keys: Sequence[str]) -> dict[str, Item]: ...

    async def put_item(self, key: str, item: Item, *, ttl_s: float) -> None: ...

    async def put_payload(self, bucket: str, key: str, body: str) -> None: ...

    async def get_payload(self, bucket: str, key: str) -> str: ...

    async def close(self) -> None: ...


def face_for(app: App) -> AsyncFace:
    """The app's async face: aioboto3 on AWS, or async twins of injected transport/store."""
    from cloudq.stores.dynamodb import DynamoStore
    from cloudq.transports.sqs import SqsTransport

    if isinstance(app.transport, SqsTransport) and isinstance(app.store, DynamoStore):
        return AioFace(app)
    return TwinFace(app)


class TwinFace:
    """The async face of an in-memory (or any blocking, non-AWS) transport and store."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport, self.store = app.transport, app.store

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if len(messages) == 1:
            self.transport.send(queue, messages[0])
        else:
            self.transport.send_batch(queue, messages)

    async def get_item(self, key: str) -> Item | None:
        return self.store.get(key)

    async def get_items(self, keys: Sequence[str]) -> dict[str, Item]:
        return self.store.get_many(keys)

    async def put_item(self, key: str, item: Item, *, ttl_s: float) -> None:
        self.store.put(key, item, ttl_s=ttl_s)

    async def put_payload(self, bucket: str, key: str, body: str) -> None:
        self.app.payloads(bucket).put(key, body)  # as the blocking publish does

    async def get_payload(self, bucket: str, key: str) -> str:
        return self.app.payloads(bucket).get(key)

    async def close(self) -> None:
        return None


class AioFace:
    """aioboto3 clients for one app, one set per running event loop."""

    def __init__(self, app: App) -> None:
        from cloudq.stores.dynamodb import DynamoStore
        from cloudq.transports.sqs import SqsTransport

        transport, store = app.transport, app.store
        assert isinstance(transport, SqsTransport) and isinstance(store, DynamoStore)
        self.aws: AwsClients = app.aws
        self.prefix = transport.prefix
        self.table = store.table
        self.dynamo = store  # its I/O-free item conversions
        self.max_batch_bytes = transport.max_batch_bytes
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}

    async def _client(self, service: str) -> Any:
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            for stale in [other for other in self._loops if other.is_closed()]:
                del self._loops[stale]  # their sessions died with their loops
            clients = self._loops[loop] = _LoopClients(self.aws)
        return await clients.get(service)

    # -- SQS --------------------------------------------------------------------------------------
    async def _queue_url(self, sqs: Any, queue: str) -> str:
        urls = self._urls()
        url = urls.get(queue)
        if url is None:
            name = self.prefix + queue
            try:
                url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
            except Exception as exc:
                if _code(exc) in wire.MISSING_QUEUE:
                    raise ConfigError(f"queue {name!r} does not exist; create it with "
                                      "`cloudq provision`") from exc
                raise TransportError(f"SQS GetQueueUrl for {name!r} failed: {exc}") from exc
            urls[queue] = url
        return url

    def _urls(self) -> dict[str, str]:
        return self._loops[asyncio.get_running_loop()].urls

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send. Single messages sent at the same moment from one loop to one standard queue
        are coalesced into SendMessageBatch calls (up to 10 per request: a tenth of the cost)."""
        if len(messages) == 1 and not is_fifo(queue):
            await self._coalesced(queue, messages[0])
        else:
            await self._send_now(queue, messages)

    async def _send_now(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        sqs = await self._client("sqs")
        url = await self._queue_url(sqs, queue)
        try:
            if len(messages) == 1:
                await sqs.send_message(QueueUrl=url, **wire.send_params(queue, messages[0]))
                return
            for entries in wire.batch_entries(queue, messages, self.max_batch_bytes):
                await self._batch(sqs, url, queue, entries)
        except (ConfigError, TransportError):
            raise
        except Exception as exc:
            raise TransportError(f"SQS send to {self.prefix + queue!r} failed: {exc}") from exc

    async def _coalesced(self, queue: str, message: OutgoingMessage) -> None:
        loop = asyncio.get_running_loop()
        await self._client("sqs")  # this loop's clients exist from here on
        clients = self._loops[loop]
        waiting = clients.outgoing.get(queue)
        if waiting is None:
            waiting = clients.outgoing[queue] = []
            flush = loop.create_task(self._flush(clients, queue))
            clients.flushes.add(flush)
            flush.add_done_callback(clients.flushes.discard)
        done: asyncio.Future[None] = loop.create_future()
        waiting.append((message, done))
        await done

    async def _flush(self, clients: _LoopClients, queue: str) -> None:
        """Send what was queued for ``queue`` while this task waited for its turn."""
        await asyncio.sleep(0)  # let the other senders of this moment join in
        waiting = clients.outgoing.pop(queue, [])
        for start in range(0, len(waiting), MAX_BATCH):
            chunk = waiting[start:start + MAX_BATCH]
            try:
                await self._send_now(queue, [message for message, _ in chunk])
            except Exception as exc:
                for _, done in chunk:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in chunk:
                    if not done.done():
                        done.set_result(None)

    async def _batch(self, sqs: Any, url: str, queue: str, entries: list[dict[str, Any]]) -> None:
        pending = {entry["Id"]: entry for entry in entries}
        succeeded: dict[str, Any] = {}
        for attempt in (1, 2):
            response = await sqs.send_message_batch(QueueUrl=url, Entries=list(pending.values()))
            failed, _ = wire.settle(pending, succeeded, response)
            if not failed:
                return
            if wire.refused(failed, attempt):
                raise wire.refusal(failed, len(entries), self.prefix + queue)

    # -- DynamoDB and S3 --------------------------------------------------------------------------
    async def get_item(self, key: str) -> Item | None:
        db = await self._client("dynamodb")
        try:
            response = await db.get_item(TableName=self.table, Key=self.dynamo.key(key),
                                         ConsistentRead=True)
        except Exception as exc:
            raise self._store_error(exc) from exc
        item = self.dynamo.item(response.get("Item"))
        return None if item is None or is_expired(item) else item

    async def get_items(self, keys: Sequence[str]) -> dict[str, Item]:
        from cloudq.stores.dynamodb import BATCH_GET_ATTEMPTS, batch_pause

        db = await self._client("dynamodb")
        found: dict[str, Item] = {}
        for request in self.dynamo.batch_requests(keys):
            for attempt in range(BATCH_GET_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(batch_pause(attempt))
                try:
                    response = await db.batch_get_item(RequestItems=request)
                except Exception as exc:
                    raise self._store_error(exc) from exc
                request = self.dynamo.absorb(response, found)
                if not request:
                    break
            else:
                raise self.dynamo.throttled(request)
        return found

    async def put_item(self, key: str, item: Item, *, ttl_s: float) -> None:
        db = await self._client("dynamodb")
        try:
            await db.put_item(TableName=self.table, Item=self.dynamo.stamped(key, item, ttl_s))
        except Exception as exc:
            raise self._store_error(exc) from exc

    async def put_payload(self, bucket: str, key: str, body: str) -> None:
        s3 = await self._client("s3")
        await s3.put_object(Bucket=bucket, Key=key, Body=body.encode(),
                            ContentType="application/json")

    async def get_payload(self, bucket: str, key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        from cloudq.payloads import S3Payloads

        s3 = await self._client("s3")
        try:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                body: bytes = await stream.read()
        except ClientError as exc:  # the blocking face's reading of S3's answer
            raise S3Payloads(self.aws, bucket).read_error(exc, key) from exc
        except BotoCoreError as exc:
            raise TransportError(f"S3 GetObject of s3://{bucket}/{key} failed: {exc}") from exc
        return body.decode()

    def _store_error(self, exc: Exception) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):  # aiobotocore raises botocore's errors
            return self.dynamo.error(exc)
        return StoreError(f"DynamoDB call on table {self.table!r} failed: {exc}")

    async def close(self) -> None:
        clients = self._loops.pop(asyncio.get_running_loop(), None)
        if clients is not None:
            await clients.close()


class _LoopClients:
    """The aioboto3 clients of one event loop, entered on first use."""

    def __init__(self, aws: AwsClients) -> None:
        self.aws = aws
        self.urls: dict[str, str] = {}
        self.outgoing: dict[str, list[tuple[OutgoingMessage, asyncio.Future[None]]]] = {}
        """Single sends waiting to go out together, per queue."""
        self.flushes: set[asyncio.Task[None]] = set()
        self._clients: dict[str, Any] = {}
        self._contexts: list[Any] = []
        self._lock = asyncio.Lock()
        self._session: Any = None

    async def get(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is not None:
            return client
        async with self._lock:
            if service not in self._clients:
                try:
                    import aioboto3  # type: ignore[import-untyped]
                except ImportError as exc:
                    raise ConfigError("the awaitable API (adelay, aget...) needs aioboto3: "
                                      "pip install 'cloudq[async]'") from exc
                from cloudq.aws import client_config

                if self._session is None:
                    self._session = aioboto3.Session(**self.aws.session_kwargs())
                context = self._session.client(service, endpoint_url=self.aws.endpoint_url,
                                               config=client_config(self.aws.max_attempts))
                self._clients[service] = await context.__aenter__()
                self._contexts.append(context)
            return self._clients[service]

    async def close(self) -> None:
        contexts, self._contexts, self._clients = self._contexts, [], {}
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return wire.error_code(str(response.get("Error", {}).get("Code", "")))


# -- what the public methods call ---------------------------------------------------------------
async def apublish(app: App, envelopes: Sequence[Envelope]) -> None:
    """``publish`` without blocking the loop: same encoding and batching, awaited I/O."""
    from cloudq.sending import log_sent, outbox

    box = outbox(app, envelopes)  # encoding errors raise here, before any I/O
    face = app.aio
    for bucket, key, body in box.payloads:
        await face.put_payload(bucket, key, body)
    await asyncio.gather(*(face.send(queue, outgoing) for queue, outgoing in box.by_queue.items()))
    log_sent(envelopes)


async def aresult_meta(app: App, task_id: str, item: Item | None) -> ResultMeta:
    """The record of ``task_id`` in ``item``, with a result kept in S3 fetched (awaited)."""
    from cloudq.errors import PayloadMissing, ResultError
    from cloudq.records import claim_of

    claim = claim_of(item)
    try:
        payload = None if claim is None else await app.aio.get_payload(*claim)
    except PayloadMissing as exc:
        raise ResultError(f"the result of task {task_id} was kept in {exc.message}") from exc
    return app.backend.meta_from(task_id, item, payload=payload)


async def arun_plan(app: App, plan: Any) -> None:
    """``run_plan`` awaited: the join items, then the envelopes."""
    expires_s = app.backend.expires_s
    await asyncio.gather(*(app.aio.put_item(key, item, ttl_s=expires_s)
                           for key, item in plan.items))
    if plan.envelopes:
        await apublish(app, plan.envelopes)
