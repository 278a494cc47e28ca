"""Small DynamoDB helpers shared by the services and servicekit's own stores."""

from __future__ import annotations

import time
from typing import Any

import anyio
from botocore.exceptions import ClientError

from . import aws
from .settings import ServiceSettings

CONDITIONAL_FAILED = "ConditionalCheckFailedException"


def table(settings: ServiceSettings, table_name: str | None = None) -> Any:
    """boto3 Table resource for the service's table (TABLE_NAME unless `table_name` is given)."""
    name = table_name or settings.table_name
    if not name:
        raise ValueError("TABLE_NAME is not set")
    return aws.resource("dynamodb", settings).Table(name)


def is_conditional_failure(exc: BaseException) -> bool:
    return aws.error_code(exc) == CONDITIONAL_FAILED


def failed_against(exc: BaseException) -> dict[str, Any] | None:
    """The item a conditional write failed against, when the write asked for it
    (ReturnValuesOnConditionCheckFailure="ALL_OLD"); None when there was no item."""
    return getattr(exc, "response", {}).get("Item")


def held_by(owner: str, *, names: dict[str, str] | None = None, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """A write's condition and expression attributes for "only while ``owner`` holds the item" (attribute
    ``owner``), merged with the write's own ``names`` and ``values``: a claim or lease that its holder
    outlived must not be overwritten or deleted by it once another holder took it over."""
    return {"ConditionExpression": "#o = :me", "ExpressionAttributeNames": {**(names or {}), "#o": "owner"},
            "ExpressionAttributeValues": {**(values or {}), ":me": {"S": owner}}}


def epoch_in(seconds: float) -> int:
    """Epoch seconds `seconds` from now (for the `expires_at` TTL attribute)."""
    return int(time.time() + seconds)


# Readiness runs on threads of its own, not on anyio's shared 40 that every store call uses: there it would wait
# behind a busy task's requests and time out, and the load balancer would take out (and ECS replace) a task that is
# only busy. A few suffice: the check answers in milliseconds, and one that hangs (DynamoDB unreachable) is not ready.
READINESS_THREADS = 4


def readiness_check(settings: ServiceSettings, table_name: str | None = None, *, client: Any = None):
    """A readiness check callable: a GetItem of an absent key on the service's table.

    It proves what every request needs (network path, credentials, dynamodb:GetItem on this table)
    and writes nothing. `client`: the boto3 DynamoDB client to use (tests); by default a client of its
    own that makes one attempt per call: the load balancer asks again anyway, and the shared client's
    backoff between throttled attempts (up to 1, 2 and 4 s) would outlast the check's 2 s time-out.
    """
    name = table_name or settings.table_name
    threads = anyio.CapacityLimiter(READINESS_THREADS)

    async def check() -> None:
        ddb = client or aws.client("dynamodb", settings, retries=False)
        try:
            await aws.run_sync(ddb.get_item, TableName=name, Key={"pk": {"S": "HEALTH"}, "sk": {"S": "HEALTH"}}, limiter=threads)
        except ClientError as exc:
            # Throttled is ready: the table answered, so path, credentials and permission are fine. Failing would
            # take every task out of the load balancer at once, and replacing tasks adds no table capacity.
            if aws.error_code(exc) not in aws.THROTTLING_ERROR_CODES:
                raise

    return check
