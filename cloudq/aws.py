"""boto3 clients, created lazily and shared: one session, one client per service.

Nothing here imports boto3 until a client is first asked for, so importing cloudq (and
building a Lambda handler) stays cheap. Clients are thread-safe once created; creating
them is not, hence the lock.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3.session
    from botocore.config import Config
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"


def client_config(max_attempts: int = 5) -> Config:
    """The botocore settings every cloudq client uses."""
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=50,
        read_timeout=25,  # longer than SQS's 20 s long poll
        connect_timeout=5,
    )


class AwsClients:
    """The SQS, DynamoDB and S3 clients of one app, for one region and endpoint."""

    def __init__(self, region: str, endpoint_url: str | None = None, *,
                 max_attempts: int = 5) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.max_attempts = max_attempts
        """Attempts per call, retries included (``aws_max_attempts``)."""
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"AwsClients(region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def sqs(self) -> SQSClient:
        client: SQSClient = self._client("sqs")
        return client

    @property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    @property
    def s3(self) -> S3Client:
        client: S3Client = self._client("s3")
        return client

    def client(self, service: str) -> Any:
        """Any other boto3 client (``"scheduler"``, ``"events"``), created once and reused."""
        return self._client(service)

    def reset_after_fork(self) -> None:
        """Forget the session and clients: a forked child must build its own connections."""
        self._lock = threading.Lock()  # the parent may have held it while forking
        self._session = None
        self._clients = {}

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._session_once().client(
                    service,  # type: ignore[call-overload]
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=client_config(self.max_attempts),
                )
                self._clients[service] = client
            return client

    def _session_once(self) -> boto3.session.Session:
        if self._session is None:
            import boto3.session

            self._session = boto3.session.Session(**self.session_kwargs())
        return self._session

    def session_kwargs(self) -> dict[str, Any]:
        """How to build a session (boto3's or aioboto3's): the region, and dummy credentials
        when talking to a local endpoint with none configured."""
        import boto3.session

        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url and boto3.session.Session(**kwargs).get_credentials() is None:
            logger.debug("no AWS credentials found; using dummy ones for %s", self.endpoint_url)
            kwargs.update(aws_access_key_id=DUMMY_ACCESS_KEY,
                          aws_secret_access_key=DUMMY_SECRET_KEY)
        return kwargs


class RequestCounter:
    """Counts AWS calls by ``"Service.Operation"`` (e.g. ``"SQS.SendMessageBatch"``).

    ``counter.attach(clients.sqs)`` registers a botocore ``before-call`` hook; retries of a
    call by botocore are not counted again.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._count)

    def detach(self, client: Any) -> None:
        client.meta.events.unregister("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_id}.{model.name}"
        with self._lock:
            self.counts[name] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
