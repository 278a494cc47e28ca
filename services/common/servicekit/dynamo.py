"""Small DynamoDB helpers shared by the services and servicekit's own stores."""

from __future__ import annotations

import time
from typing import Any

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


def epoch_in(seconds: float) -> int:
    """Epoch seconds `seconds` from now (for the `expires_at` TTL attribute)."""
    return int(time.time() + seconds)


def readiness_check(settings: ServiceSettings, table_name: str | None = None):
    """A readiness check callable: DescribeTable on the service's table."""
    name = table_name or settings.table_name

    async def check() -> None:
        await aws.run_sync(aws.client("dynamodb", settings).describe_table, TableName=name)

    return check
