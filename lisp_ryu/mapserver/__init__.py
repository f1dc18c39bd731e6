"""Map-Server / Map-Resolver (RFC 9301 §8) with publish/subscribe (RFC 9437).

- `service`    the pure core: `MapServer(config, nonces=, now=, store=)` with
               handle_control / handle_timer / next_deadline
- `store`      durable state: msgpack snapshot + fsynced journal (`FileStore`), `MemoryStore`
- `ratelimit`  per-source token buckets
- `views`      the JSON shapes of registrations, subscriptions and counters
- `server`     the standalone `lisp-ryu mapserver` loop (selectors, UDP + small HTTP)
- `cli`        the `mapserver` and `show` subcommands
"""

from .service import EtrRegistration, MapServer, Subscription
from .store import FileStore, MemoryStore, StoreError

__all__ = ["EtrRegistration", "FileStore", "MapServer", "MemoryStore", "StoreError", "Subscription"]
