"""moto's server for the benchmark, with three costs fixed: TransactWriteItems, Query, and routing each call.

Stock moto backs up every table a transaction touches with ``copy.deepcopy(table)`` so that it can
roll back, once per item of the transaction: its cost grows with the table (measured here: about
18 ms with 100 items, 155 ms with 1,000, 430 ms with 3,000, for a two-item transaction). persona
reserves a slot with a transaction, and every session adds items to its table, so under stock moto
the benchmark would measure moto's backup getting slower by the second, not the services. DynamoDB's
transactions do not slow down with table size.

Stock moto also answers a Query on a table's own key by sorting every item of the table and keeping
those of the partition asked for, so every reservation persona checks costs more as sessions pile up
(at 10 sessions/s the p95 of starting one doubled between a 20 s and a 40 s run). The patch hands
moto's query only the partition's items; DynamoDB reads one partition too. A Query on a global secondary
index (persona's `holds`, on every reservation) is worse: moto sorts every item of the table by its
DynamoDB-typed keys before it keeps those of the index partition asked for (some 20 ms with 100 items,
70 ms with 1,000, 285 ms with 3,000). The patch hands it only the items whose index partition key
matches, found with a plain pass over the table, and lets moto sort and page those as before.

The patch keeps moto's behaviour (same checks, same all-or-nothing rollback) but saves only what a
transaction can change, the items it names (deep copies), and puts those back when it is cancelled.
It also caches the list of moto's services that every request recomputes from the file system while
holding the server's dispatch lock. The server is the repo's (local/moto_server.py): one AWS request at a
time, as for `make run-local` and the tests. A self-check runs first (a cancelled transaction must leave the table as it was,
a successful one must apply); if it fails, or moto's internals are not what this expects, the server
runs stock moto and says so.

    python fast_moto.py -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

LOCAL_DIR = Path(__file__).resolve().parents[1] / "local"  # moto_server.py: the repo's moto server


def _patch() -> Any:
    """Installs the patch; returns a function that removes it."""
    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items
    real_copy = models.copy

    def named_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        """(table, hash value, range value, deep copy of the item now or None) per item named."""
        saved = []
        for entry in transact_items:
            for op_type, op in entry.items():
                table = backend.tables.get(op.get("TableName"))
                key = (op.get("Item") if op_type == "Put" else op.get("Key")) or {}
                if table is None or table.hash_key_attr not in key:
                    continue
                hash_value = DynamoType(key[table.hash_key_attr])
                range_value = DynamoType(key[table.range_key_attr]) if table.has_range_key and table.range_key_attr in key else None
                if table.has_range_key:
                    current = table.items[hash_value].get(range_value) if hash_value in table.items else None
                else:
                    current = table.items.get(hash_value)
                saved.append((table, hash_value, range_value, real_copy.deepcopy(current) if current is not None else None))
        return saved

    def restore(saved: list[tuple[Any, Any, Any, Any]]) -> None:
        for table, hash_value, range_value, item in reversed(saved):
            if table.has_range_key:
                if item is not None:
                    table.items[hash_value][range_value] = item
                elif hash_value in table.items:
                    table.items[hash_value].pop(range_value, None)
            elif item is not None:
                table.items[hash_value] = item
            else:
                table.items.pop(hash_value, None)

    class _Copy:
        """Stands in for the `copy` module inside moto.dynamodb.models: its whole-table backup
        becomes the table itself (a no-op rollback); the wrapper below restores the items instead."""

        copy = staticmethod(real_copy.copy)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else real_copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = named_items(self, transact_items)
        try:
            return original(self, transact_items)
        except BaseException:
            restore(saved)  # all or nothing, as moto's own rollback
            raise

    models.copy = _Copy
    backend_class.transact_write_items = transact_write_items

    # Query on the table's own key: moto filters all_items() (every item, sorted) down to one partition.
    # While such a query runs (in this thread), all_items() of that table returns the partition only,
    # in the same order. On an index, all_items() returns the items of the index partition asked for
    # (moto sorts its results by the index's keys itself). Every other caller gets the whole table as before.
    import threading

    real_all_items, real_query = Table.all_items, Table.query
    querying = threading.local()

    def _same(attribute: Any, value: Any) -> bool:
        # DynamoType's == casts both sides on every call (most of the pass's time); strings compare as they are.
        if attribute is None or attribute.type != value.type:
            return False
        return attribute.value == value.value if value.type == "S" else attribute == value

    def all_items(self: Any) -> Any:
        if getattr(querying, "table", None) is not self:
            return real_all_items(self)
        if querying.index_keys is not None:
            (name, value), *more = querying.index_keys
            partitions = self.items.values() if self.range_key_attr else [{None: item} for item in self.items.values()]
            return [item for partition in partitions for item in partition.values()
                    if _same(item.attrs.get(name), value) and all(_same(item.attrs.get(n), v) for n, v in more)]
        partition = self.items.get(querying.hash_key)
        if partition is None:
            return []
        if not self.range_key_attr:
            return [partition]
        return sorted(partition.values(), key=lambda item: item.range_key)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        index_keys = kwargs.get("hash_key_conditions") if index_name else None
        if hash_key is None or (index_name and not index_keys):
            return real_query(self, hash_key, *args, **kwargs)
        querying.table, querying.hash_key, querying.index_keys = self, hash_key, index_keys
        try:
            return real_query(self, hash_key, *args, **kwargs)
        finally:
            querying.table = querying.hash_key = querying.index_keys = None

    Table.all_items, Table.query = all_items, query

    # Every request lists moto's package directory (a stat per service, ~170) to route itself, under
    # the server's one dispatch lock: all AWS calls queue behind it. The directory never changes.
    from moto import backends

    list_modules = backends.list_of_moto_modules
    modules = frozenset(list_modules())
    backends.list_of_moto_modules = lambda: modules

    def undo() -> None:
        models.copy = real_copy
        backend_class.transact_write_items = original
        Table.all_items, Table.query = real_all_items, real_query
        backends.list_of_moto_modules = list_modules

    return undo


def _self_check() -> None:
    """Raise AssertionError unless the patched moto still rolls back and commits correctly."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    def item(pk: str, count: int) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": "X"}, "n": {"N": str(count)}}

    with mock_aws():
        db = boto3.client("dynamodb", region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="x")
        db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        db.put_item(TableName="t", Item=item("a", 1))
        db.put_item(TableName="t", Item=item("b", 1))
        db.put_item(TableName="t", Item=item("d", 1))
        bump = {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "X"}},
                           "UpdateExpression": "SET n = n + :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}
        fail = {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "b"}, "sk": {"S": "X"}},
                                   "ConditionExpression": "n > :big", "ExpressionAttributeValues": {":big": {"N": "5"}}}}
        drop = {"Delete": {"TableName": "t", "Key": {"pk": {"S": "b"}, "sk": {"S": "X"}}}}
        drop_d = {"Delete": {"TableName": "t", "Key": {"pk": {"S": "d"}, "sk": {"S": "X"}}}}
        new = {"Put": {"TableName": "t", "Item": item("c", 1)}}
        try:  # update, insert and delete applied, then the last condition fails: all undone
            db.transact_write_items(TransactItems=[bump, new, drop_d, fail])
            raise AssertionError("a failing condition did not cancel the transaction")
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TransactionCanceledException", error
        scan = sorted((i["pk"]["S"], i["n"]["N"]) for i in db.scan(TableName="t")["Items"])
        assert scan == [("a", "1"), ("b", "1"), ("d", "1")], f"rollback left {scan}"
        db.transact_write_items(TransactItems=[bump, new, drop])
        scan = sorted((i["pk"]["S"], i["n"]["N"]) for i in db.scan(TableName="t")["Items"])
        assert scan == [("a", "2"), ("c", "1"), ("d", "1")], f"commit left {scan}"

        # A query reads its partition only, in key order, and pages as before.
        for sk in ("R#3", "R#1", "R#2", "S#1"):
            db.put_item(TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": sk}})
        query = {"TableName": "t", "KeyConditionExpression": "pk = :p AND begins_with(sk, :r)",
                 "ExpressionAttributeValues": {":p": {"S": "p"}, ":r": {"S": "R#"}}}
        first = db.query(**query, Limit=2)
        rest = db.query(**query, ExclusiveStartKey=first["LastEvaluatedKey"])
        keys = [i["sk"]["S"] for i in first["Items"] + rest["Items"]]
        assert keys == ["R#1", "R#2", "R#3"], f"query read {keys}"
        backwards = [i["sk"]["S"] for i in db.query(**query, ScanIndexForward=False)["Items"]]
        assert backwards == ["R#3", "R#2", "R#1"], f"query backwards read {backwards}"
        assert db.query(**{**query, "ExpressionAttributeValues": {":p": {"S": "none"}, ":r": {"S": "R#"}}})["Items"] == []
        assert len(db.scan(TableName="t")["Items"]) == 7, "a scan must still see every item"

        # An index query reads the items of its index partition that have the index's keys, in the index's order.
        db.create_table(TableName="i", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"},
                                              {"AttributeName": "g", "AttributeType": "S"}, {"AttributeName": "at", "AttributeType": "N"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                        GlobalSecondaryIndexes=[{"IndexName": "by_g", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                                 "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}]}])
        for pk, sk, g, at in (("p1", "a", "x", 30), ("p2", "b", "x", 10), ("p1", "c", "x", 20), ("p1", "d", "y", 5), ("p3", "e", "x", 99)):
            db.put_item(TableName="i", Item={"pk": {"S": pk}, "sk": {"S": sk}, "g": {"S": g}, "at": {"N": str(at)}})
        db.put_item(TableName="i", Item={"pk": {"S": "p1"}, "sk": {"S": "f"}, "g": {"S": "x"}})  # no sort key: not in the index
        query = {"TableName": "i", "IndexName": "by_g", "KeyConditionExpression": "g = :g AND #at <= :at",
                 "ExpressionAttributeNames": {"#at": "at"}, "ExpressionAttributeValues": {":g": {"S": "x"}, ":at": {"N": "30"}}}
        first = db.query(**query, Limit=2)
        rest = db.query(**query, ExclusiveStartKey=first["LastEvaluatedKey"])
        keys = [i["sk"]["S"] for i in first["Items"] + rest["Items"]]
        assert keys == ["b", "c", "a"], f"index query read {keys}"


def main(argv: list[str]) -> None:
    undo = None
    try:
        undo = _patch()
        _self_check()
        print("fast_moto: TransactWriteItems backs up only the items it touches, Query reads only its partition,"
              " service routing cached (self-check passed)", flush=True)
    except Exception as error:  # any surprise: measure with stock moto rather than a broken one
        if undo is not None:
            undo()
        print(f"fast_moto: WARNING: running stock moto, the patch does not apply: {error!r}", flush=True)
    sys.path.insert(0, str(LOCAL_DIR))
    import moto_server

    moto_server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
