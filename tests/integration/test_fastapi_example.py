"""The FastAPI example (examples/fastapi_app) with FastAPI's test client, against moto server:
enqueue from an async endpoint, a real worker (``--pool asyncio``) runs the async task, the
status endpoint reports it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloudq.localaws import LocalAws
from cloudq.provision import provision
from cloudq.runners.poller import Poller
from examples.fastapi_app.main import api
from examples.fastapi_app.tasks import app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(local_aws: LocalAws, unique_prefix: str) -> Iterator[TestClient]:
    app.conf.update(endpoint_url=local_aws.endpoint_url, queue_prefix=unique_prefix,
                    result_table=f"{unique_prefix}results", worker_poll_wait=1)
    provision(app)
    poller = Poller(app, pool="asyncio", concurrency=20)
    worker = threading.Thread(target=poller.run, daemon=True)
    worker.start()
    try:
        with TestClient(api) as test_client:
            yield test_client
    finally:
        poller.stop()
        worker.join(10)


def test_enqueue_then_status_reports_the_async_tasks_result(client: TestClient) -> None:
    response = client.post("/fetch", json={"url": "https://example.com"})
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert response.json()["status_url"] == f"/tasks/{task_id}"

    status = client.get(f"/tasks/{task_id}", params={"wait": 10}).json()

    assert status == {"task_id": task_id, "state": "SUCCESS",
                      "result": len("https://example.com") * 100, "error": None}


def test_status_of_a_task_not_run_yet_is_pending(client: TestClient) -> None:
    task_id = client.post("/fetch", json={"url": "https://example.com/later",
                                          "countdown": 60}).json()["task_id"]

    assert client.get(f"/tasks/{task_id}").json()["state"] == "PENDING"


def test_many_enqueues_at_once_all_finish(client: TestClient) -> None:
    ids = [client.post("/fetch", json={"url": f"https://example.com/{i}"}).json()["task_id"]
           for i in range(20)]

    states = {client.get(f"/tasks/{i}", params={"wait": 15}).json()["state"] for i in ids}

    assert states == {"SUCCESS"}


def test_bad_input_is_refused_before_anything_is_sent(client: TestClient) -> None:
    response = client.post("/fetch", json={"url": ["not", "a", "string"]})

    assert response.status_code == 422
