"""moto server with requests applied one at a time.

moto's TransactWriteItems snapshots whole tables and restores the snapshot when a transaction is
cancelled. In the threaded server, a cancelled transaction can therefore erase another request's
write that landed in between (seen here: a callback answered "applied" whose write vanished).
DynamoDB itself has no such race. Serializing requests keeps moto's semantics and removes the race;
connections are still accepted concurrently.
"""

import os
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler

_lock = threading.Lock()


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
