"""The boto3 shells without a server: lazy imports, client caching, batch retries."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from cloudq.aws import AwsClients
from cloudq.errors import TransportError
from cloudq.stores.dynamodb import DynamoStore
from cloudq.transports.base import OutgoingMessage, ReceivedMessage
from cloudq.transports.sqs import SqsTransport
from cloudq.transports.sqs_wire import chunks


def test_importing_the_shells_does_not_import_boto3() -> None:
    code = ("import sys, cloudq.aws, cloudq.transports.sqs, cloudq.stores.dynamodb, "
            "cloudq.payloads; print('boto3' in sys.modules)")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_clients_are_created_once_and_shared_across_threads() -> None:
    clients = AwsClients(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(clients.sqs)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(client is seen[0] for client in seen)
    assert clients.dynamodb is clients.dynamodb
    assert clients.sqs.meta.endpoint_url == "http://127.0.0.1:1"


def test_reset_after_fork_builds_new_clients() -> None:
    clients = AwsClients(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    before = clients.sqs

    clients.reset_after_fork()

    assert clients.sqs is not before


def test_a_local_endpoint_without_credentials_gets_dummy_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clients = AwsClients(region="us-east-1", endpoint_url="http://127.0.0.1:1")

    credentials = clients.sqs._request_signer._credentials

    assert credentials.access_key == "testing"


# -- batch retries, against a scripted client ------------------------------------------------------
class ScriptedSqs:
    """Answers batch calls from a script: each step marks entry Ids as failed (or not)."""

    def __init__(self, *steps: dict[str, tuple[str, bool]]) -> None:
        self.steps = list(steps)
        self.calls: list[list[str]] = []

    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message_batch(self, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self.calls.append([e["Id"] for e in Entries])
        failing = self.steps.pop(0) if self.steps else {}
        return {
            "Successful": [{"Id": e["Id"], "MessageId": f"id-{e['Id']}"}
                           for e in Entries if e["Id"] not in failing],
            "Failed": [{"Id": i, "Code": code, "SenderFault": sender, "Message": "no"}
                       for i, (code, sender) in failing.items()],
        }

    delete_message_batch = send_message_batch


def scripted(*steps: dict[str, tuple[str, bool]]) -> tuple[SqsTransport, ScriptedSqs]:
    fake = ScriptedSqs(*steps)
    return SqsTransport(SimpleNamespace(sqs=fake), prefix="p-"), fake  # type: ignore[arg-type]


def test_send_batch_retries_entries_sqs_failed_once() -> None:
    transport, fake = scripted({"1": ("InternalError", False)})

    ids = transport.send_batch("q", [OutgoingMessage(body=b) for b in ("a", "b", "c")])

    assert ids == ["id-0", "id-1", "id-2"]
    assert fake.calls == [["0", "1", "2"], ["1"]]


def test_send_batch_gives_up_after_the_retry() -> None:
    failing = {"1": ("InternalError", False)}
    transport, _ = scripted(failing, failing)

    with pytest.raises(TransportError, match="InternalError"):
        transport.send_batch("q", [OutgoingMessage(body=b) for b in ("a", "b")])


def test_send_batch_does_not_retry_what_the_sender_got_wrong() -> None:
    transport, fake = scripted({"0": ("InvalidParameterValue", True)})

    with pytest.raises(TransportError, match="p-q"):
        transport.send_batch("q", [OutgoingMessage(body="a")])
    assert len(fake.calls) == 1


def test_ack_ignores_gone_receipts_and_retries_the_rest() -> None:
    transport, fake = scripted({"0": ("ReceiptHandleIsInvalid", True), "1": ("Throttled", False)})
    messages = [ReceivedMessage(queue="q", body="", message_id=str(i), receipt=f"r{i}")
                for i in range(3)]

    transport.ack(messages)

    assert fake.calls == [["0", "1", "2"], ["1"]]


# -- DynamoDB BatchGetItem's unprocessed keys ------------------------------------------------------
class ScriptedDynamo:
    """Answers BatchGetItem with one key per call, the rest left unprocessed."""

    def __init__(self) -> None:
        self.calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        [(table, request)] = RequestItems.items()
        first, *rest = request["Keys"]
        unprocessed = {table: {**request, "Keys": rest}} if rest else {}
        return {"Responses": {table: [{**first, "ttl": {"N": "9999999999"}}]},
                "UnprocessedKeys": unprocessed}


def test_get_many_retries_unprocessed_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloudq.stores.dynamodb.time.sleep", lambda _: None)
    fake = ScriptedDynamo()
    store = DynamoStore(SimpleNamespace(dynamodb=fake), "results")  # type: ignore[arg-type]

    found = store.get_many(["a", "b", "c"])

    assert sorted(found) == ["a", "b", "c"]
    assert fake.calls == 3


def test_batches_are_cut_at_ten_messages_or_the_byte_budget() -> None:
    small = [OutgoingMessage(body="x") for _ in range(23)]
    big = [OutgoingMessage(body="x" * 400) for _ in range(5)]

    assert [len(c) for c in chunks(small, max_bytes=1000)] == [10, 10, 3]
    assert [len(c) for c in chunks(big, max_bytes=1000)] == [2, 2, 1]
    assert [len(c) for c in chunks([OutgoingMessage(body="x" * 5000)], max_bytes=1000)] == [1]


class NeverProcessed(ScriptedDynamo):
    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"Responses": {}, "UnprocessedKeys": RequestItems}


def test_get_many_gives_up_on_keys_dynamodb_never_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudq.errors import StoreError
    from cloudq.stores.dynamodb import BATCH_GET_ATTEMPTS

    monkeypatch.setattr("cloudq.stores.dynamodb.time.sleep", lambda _: None)
    fake = NeverProcessed()
    store = DynamoStore(SimpleNamespace(dynamodb=fake), "results")  # type: ignore[arg-type]

    with pytest.raises(StoreError, match="kept throttling reads of 2 items"):
        store.get_many(["a", "b"])
    assert fake.calls == BATCH_GET_ATTEMPTS


@pytest.mark.parametrize(("fake", "outcome"), [(ScriptedDynamo, 3), (NeverProcessed, "raises")])
def test_the_awaitable_face_follows_the_same_batch_get_rules(
        monkeypatch: pytest.MonkeyPatch, fake: type[ScriptedDynamo], outcome: Any) -> None:
    import asyncio

    import cloudq
    from cloudq.aio import AioFace
    from cloudq.errors import StoreError

    monkeypatch.setattr("cloudq.aio.asyncio.sleep", _no_sleep)
    scripted_db = fake()

    class AsyncDb:
        async def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
            return scripted_db.batch_get_item(RequestItems)

    face = AioFace(cloudq.App("shells", set_as_current=False))

    async def client(service: str) -> Any:
        return AsyncDb()

    monkeypatch.setattr(face, "_client", client)
    if outcome == "raises":
        with pytest.raises(StoreError, match="kept throttling"):
            asyncio.run(face.get_items(["a", "b", "c"]))
    else:
        found = asyncio.run(face.get_items(["a", "b", "c", "a"]))
        assert sorted(found) == ["a", "b", "c"] and scripted_db.calls == outcome


async def _no_sleep(_: float) -> None:
    return None
