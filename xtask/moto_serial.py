"""moto server with requests applied one at a time.

moto's TransactWriteItems snapshots whole tables and restores the snapshot when a transaction is
cancelled. In the threaded server, a cancelled transaction can therefore erase another request's
write that landed in between (seen here: a callback answered "applied" whose write vanished).
DynamoDB itself has no such race. Serializing requests keeps moto's semantics and removes the race;
connections are still accepted concurrently.

Two leaks are closed too, as the stack runs for long. moto tracks every model instance it ever
made (for its dashboard), including the deep copy of each table that every TransactWriteItems
takes as its snapshot: a whole table per transaction, three times the size with a stream (about 5
MB each for 2000 items, measured). Nothing here reads that dashboard, so instances are not
tracked. And moto keeps every DynamoDB Streams shard iterator it handed out, each holding the
table it read, so also the snapshots a cancelled transaction swapped out; the local event sources
take a fresh iterator per poll and never reuse one, so only the most recent iterators are kept.

That whole-table snapshot also made every transaction cost more as the tables grew (31 ms at an
empty table, 106 ms at 2000 items, measured). A transaction here snapshots only what it can
change: the items it names and the length of each touched table's stream; a cancelled one puts
those items back and drops the stream records it appended. The effect is the same, the cost
stays flat (docs/local-stack-load.md has the figures).

moto's Query reads, sorts and compares the whole table for every query, even one on a single
partition (`all_items()`), so a query cost grew with the table too (and queries were two thirds of
moto's time under load, profiled). A query here hands moto only the candidates: the partition of a
table query, the items carrying the index's hash value for an index query. moto then filters and
sorts those as before, so its answer is the same. And the request log keeps server errors only:
a line per request was a tenth of moto's time.
"""

import copy
import functools
import inspect
import itertools
import os
import sys
import threading

from werkzeug.serving import run_simple

from moto import backends as moto_backends
from moto.core import responses as moto_responses
from moto.core.common_models import BaseModel
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler

_lock = threading.Lock()

# Iterators kept per backend: the event sources use each one at once, in the next request or two.
_SHARD_ITERATORS_KEPT = 16


def untracked_new(cls, *args, **kwargs):
    return object.__new__(cls)


BaseModel.__new__ = staticmethod(untracked_new)


def keeping_recent_iterators(method):
    def call(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        excess = len(self.shard_iterators) - _SHARD_ITERATORS_KEPT
        for key in list(itertools.islice(self.shard_iterators, max(excess, 0))):
            del self.shard_iterators[key]
        return result

    return call


DynamoDBStreamsBackend.get_shard_iterator = keeping_recent_iterators(
    DynamoDBStreamsBackend.get_shard_iterator
)
DynamoDBStreamsBackend.get_records = keeping_recent_iterators(DynamoDBStreamsBackend.get_records)


class _TransactionCopies:
    """Stands in for the `copy` module inside moto's DynamoDB backend: while a transaction runs,
    its whole-table snapshot is the table itself (a restore is then a no-op), and
    `item_snapshots` does the real undo. Everything else is deep-copied as before."""

    def __init__(self, real):
        self._real = real
        self.in_transaction = False

    def deepcopy(self, value, memo=None):
        if self.in_transaction and isinstance(value, Table):
            return value
        return self._real.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(self._real, name)


_copies = _TransactionCopies(dynamodb_models.copy)
dynamodb_models.copy = _copies


def _item_key(table, op_type, op):
    """The (hash, range) a transaction operation names, as the table stores them."""
    attrs = op["Item"] if op_type == "Put" else op["Key"]
    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = None
    if table.range_key_attr is not None:
        range_value = DynamoType(attrs[table.range_key_attr])
    return hash_value, range_value


def item_snapshots(backend, transact_items):
    """What an undo of these operations needs: each named item as it is now, and the length of
    each touched table's stream. Malformed operations are left to moto to refuse."""
    items, streams = [], {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.tables[op["TableName"]]
            hash_value, range_value = _item_key(table, op_type, op)
            current = table.get_item(hash_value, range_value)
        except Exception:  # noqa: BLE001 moto itself refuses the operation, with its own error
            continue
        items.append((table, hash_value, range_value, copy.deepcopy(current)))
        if table.stream_shard is not None:
            streams.setdefault(id(table), (table.stream_shard, len(table.stream_shard.items)))
    return items, list(streams.values())


def restore(items, streams):
    """Puts the snapshot back, last taken first, and drops the stream records written since."""
    for table, hash_value, range_value, before in reversed(items):
        if range_value is None:
            if before is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = before
                file_item(table, before)
            continue
        by_range = table.items[hash_value]
        if before is None:
            by_range.pop(range_value, None)
        else:
            by_range[range_value] = before
            file_item(table, before)
        if not by_range:
            table.items.pop(hash_value, None)
    for shard, length in streams:
        del shard.items[length:]


def transacting_on_items(method):
    def call(self, transact_items):
        items, streams = item_snapshots(self, transact_items)
        _copies.in_transaction = True
        try:
            return method(self, transact_items)
        except Exception:
            restore(items, streams)
            raise
        finally:
            _copies.in_transaction = False

    return call


DynamoDBBackend.transact_write_items = transacting_on_items(DynamoDBBackend.transact_write_items)


# The candidates of the query being run: a filter `all_items()` applies while it is set.
_candidates = None
_all_items = Table.all_items


def candidate_items(self):
    return _all_items(self) if _candidates is None else _candidates(self)


def partition(hash_key):
    def items(table):
        found = table.items.get(hash_key)
        if found is None:
            return []
        return list(found.values()) if table.range_key_attr else [found]

    return items


def carrying(conditions):
    """The items an index query can match: those filed under its first hash value that still
    carry every hash value (entries an update or delete made stale are dropped here)."""
    name, value = conditions[0]

    def items(table):
        filed = _filed(table).get((name, _value_key(value)))
        if filed is None:
            return []
        found = []
        for key in list(filed):
            item = _stored(table, *key)
            if item is not None and all(_equal(item.attrs.get(n), v) for n, v in conditions):
                found.append(item)
            else:
                filed.discard(key)
        return found

    return items


def _equal(attr, value):
    return attr is not None and attr == value


def _value_key(value):
    """A hashable form equal for equal DynamoDB values (numbers may be spelled two ways)."""
    return (value.type, value.cast_value)


def _filed(table):
    """Per table: (attribute, value) -> keys of the items carrying it, for every attribute some
    index hashes on. Kept by every write below; may hold stale keys, never misses one."""
    return table.__dict__.setdefault("_xtask_filed", {})


def _stored(table, hash_value, range_value):
    by_hash = table.items.get(hash_value)
    if by_hash is None or range_value is None:
        return by_hash
    return by_hash.get(range_value)


def file_item(table, item):
    if item is None:
        return
    key = (item.hash_key, item.range_key if table.range_key_attr else None)
    for index in table.all_indexes():
        for part in index.schema:
            value = item.attrs.get(part["AttributeName"])
            if part["KeyType"] == "HASH" and value is not None and value.type in ("S", "N", "B"):
                bucket = (part["AttributeName"], _value_key(value))
                _filed(table).setdefault(bucket, set()).add(key)


def filing_put(method):
    def call(self, *args, **kwargs):
        item = method(self, *args, **kwargs)
        file_item(self, item)
        return item

    return call


def filing_update(method):
    def call(self, table_name, key, *args, **kwargs):
        try:
            return method(self, table_name, key, *args, **kwargs)
        finally:
            # Also after a failure: an update may have changed the item before failing.
            table = self.tables.get(table_name)
            if table is not None:
                try:
                    file_item(table, _stored(table, *_item_key(table, "Update", {"Key": key})))
                except Exception:  # noqa: BLE001 a malformed key: moto refused it already
                    pass

    return call


Table.put_item = filing_put(Table.put_item)
DynamoDBBackend.update_item = filing_update(DynamoDBBackend.update_item)


def querying_candidates(method):
    signature = inspect.signature(method)

    def call(*args, **kwargs):
        global _candidates
        query = signature.bind(*args, **kwargs).arguments
        if query.get("index_name") is None:
            if query.get("hash_key") is not None:
                _candidates = partition(query["hash_key"])
        elif query.get("hash_key_conditions"):
            _candidates = carrying(query["hash_key_conditions"])
        try:
            return method(*args, **kwargs)
        finally:
            _candidates = None

    return call


Table.all_items = candidate_items
Table.query = querying_candidates(Table.query)


# Two look-ups moto repeats for every request, with the same answer each time: the list of its
# service packages (read from the file system) and the action methods of a response class
# (`inspect.getmembers`). Together a fifth of a request's time, profiled.
_MOTO_MODULES = tuple(moto_backends.list_of_moto_modules())
moto_backends.list_of_moto_modules = lambda: _MOTO_MODULES
moto_responses.method_names_from_class = functools.lru_cache(maxsize=None)(
    moto_responses.method_names_from_class
)


class QuietRequestHandler(MotoRequestHandler):
    """Logs server errors only."""

    def log_request(self, code="-", size="-"):
        if str(code).startswith("5"):
            super().log_request(code, size)


def serialized(app):
    def handle(environ, start_response):
        with _lock:
            # Consume the whole response inside the lock: moto builds it lazily.
            return list(app(environ, start_response))

    return handle


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialized(app), threaded=True, request_handler=QuietRequestHandler)


if __name__ == "__main__":
    main()
