"""An async web API that enqueues tasks and reports their status without blocking its loop.

Run it locally, no AWS account needed (from the repository's root, three shells)::

    cloudq dev -A examples.fastapi_app.tasks:app --pool asyncio    # local AWS + a worker
    export CLOUDQ_ENDPOINT_URL=http://127.0.0.1:PORT              # the address it printed
    uvicorn examples.fastapi_app.main:api --port 8000
    curl -X POST localhost:8000/fetch -H 'content-type: application/json' \\
         -d '{"url": "https://example.com"}'
    curl localhost:8000/tasks/TASK_ID
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cloudq
from examples.fastapi_app.tasks import app, fetch_size


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await app.aclose()  # close this loop's aioboto3 clients


api = FastAPI(title="cloudq FastAPI example", lifespan=lifespan)


class FetchRequest(BaseModel):
    url: str
    countdown: float | None = None


class Enqueued(BaseModel):
    task_id: str
    status_url: str


class Status(BaseModel):
    task_id: str
    state: str
    result: Any = None
    error: str | None = None


@api.post("/fetch", status_code=202, response_model=Enqueued)
async def enqueue(body: FetchRequest) -> Enqueued:
    """Send ``web.fetch_size`` without blocking the event loop (aioboto3 underneath)."""
    try:
        result = await fetch_size.aapply_async((body.url,), countdown=body.countdown)
    except cloudq.ValidationError as exc:  # bad arguments fail here, before any AWS call
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return Enqueued(task_id=result.id, status_url=f"/tasks/{result.id}")


@api.get("/tasks/{task_id}", response_model=Status)
async def status(task_id: str, wait: float = 0.0) -> Status:
    """The task's state; with ``?wait=N`` wait up to N seconds for it to finish."""
    result: cloudq.AsyncResult[Any] = cloudq.AsyncResult(task_id, app=app)
    try:
        value = await result.aget(timeout=min(max(wait, 0.0), 25.0), propagate=False)
    except cloudq.TimeoutError:  # not finished (yet): PENDING, STARTED, RETRY, PROGRESS...
        return Status(task_id=task_id, state=await result.astate())
    state = await result.astate()
    if state == cloudq.states.SUCCESS:
        return Status(task_id=task_id, state=state, result=value)
    return Status(task_id=task_id, state=state, error=repr(value))
