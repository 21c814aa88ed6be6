"""Starts moto's server with each request handled atomically, as DynamoDB applies each write.

moto's threaded server evaluates a condition expression and then writes the item in two steps,
with no lock between them, so two concurrent conditional PutItems on one key can both succeed
under load. DynamoDB never allows that, and Keel's idempotency and concurrency guards rely on it.
Serializing the handling of requests (connections stay concurrent) keeps moto faithful.

Usage: python moto_server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""

import sys
import threading

from moto import server

_lock = threading.Lock()
_dispatch = server.DomainDispatcherApplication.__call__


def _atomic(self, environ, start_response):
    with _lock:
        return list(_dispatch(self, environ, start_response))


server.DomainDispatcherApplication.__call__ = _atomic

if __name__ == "__main__":
    sys.exit(server.main())
