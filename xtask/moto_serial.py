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
"""

import itertools
import os
import sys
import threading

from werkzeug.serving import run_simple

from moto.core.common_models import BaseModel
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
    run_simple(host, port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
