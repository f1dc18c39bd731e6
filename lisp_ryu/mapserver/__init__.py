"""Map-Server / Map-Resolver (RFC 9301 §8) with publish/subscribe (RFC 9437).

- `service`    the pure core: `MapServer(config, nonces=, now=, store=)` with
               handle_control / handle_timer / next_deadline, composing
               `registry`, `resolver` (+ `answer_cache`, `shaping`), `pubsub`,
               `northbound` and `journal` around the shared `state`
- `store`      durable state's files: msgpack snapshot + fsynced journal (`FileStore`), `MemoryStore`
- `views`      the JSON shapes of registrations, subscriptions and counters
- `server`     the standalone `lisp-ryu mapserver` loop (selectors, UDP + small HTTP)
- `cli`        the `mapserver` and `show` subcommands
"""

from .service import MapServer
from .state import EtrRegistration, Subscription
from .store import FileStore, MemoryStore, StoreError

__all__ = ["EtrRegistration", "FileStore", "MapServer", "MemoryStore", "StoreError", "Subscription"]
