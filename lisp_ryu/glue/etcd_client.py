"""A small etcd v3 client over the gRPC-JSON gateway (`/v3/`), on `http.client`.

Why our own and not PyPI `etcd3gw` (evaluated, 2.7.0): its watcher ignores every watch
response but `created` and `events`, so a watch that etcd cancels because its start
revision was compacted (`{"canceled": true, "compact_revision": N}`, the stream left
open) just stops delivering, silently; a watch stream that ends (member killed) ends in a
thread-pool future nobody reads; it speaks to one endpoint and has no failover; and it
brings requests, futurist, debtcollector and wrapt.  The replica needs exactly those
cases told apart, and what it uses of the API is nine JSON calls, so this module is that
and nothing more:

- every call goes to the current endpoint over one kept-alive connection, and on a
  connection failure to the next (a call that may have reached etcd is retried
  elsewhere only when it is idempotent: ranges, status, lease keep-alives);
- "no endpoint answered within the timeout" is `EtcdUnavailable`, "etcd answered no"
  is `EtcdError` with its gRPC code; a compacted watch is `WatchCompacted`;
- keys and values are bytes here and base64 on the wire; etcd's 64-bit integers (JSON
  strings) come back as ints.

One client per thread: a client holds connections and is not thread-safe.  A `Watch`
holds its own connection and may be closed from another thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

API = "/v3/"

#: gRPC status codes that mean "try again / elsewhere", as the gateway reports them.
GRPC_UNAVAILABLE = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE


class EtcdError(Exception):
    """etcd answered, and the answer is an error."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time, or the one that did has no quorum behind it."""


class WatchCompacted(EtcdError):
    """The watch's start revision is older than the compaction: read again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision compacted (compact_revision {compact_revision})")
        self.compact_revision = compact_revision


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict) -> "KeyValue":
        return cls(unb64(kv.get("key")), unb64(kv.get("value")), int(kv.get("create_revision", 0)),
                   int(kv.get("mod_revision", 0)), int(kv.get("version", 0)), int(kv.get("lease", 0)))


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchResponse:
    revision: int  # the header revision: everything up to it has been delivered
    events: tuple[WatchEvent, ...]


# ------------------------------------------------------------------ request bodies (txn)


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict:
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_delete(key: bytes, range_end: bytes | None = None) -> dict:
    body = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return {"request_delete_range": body}


def op_range(key: bytes, range_end: bytes | None = None) -> dict:
    body = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return {"request_range": body}


def compare(key: bytes, target: str, result: str, value: int | bytes) -> dict:
    """`target` is CREATE, MOD, VERSION, VALUE or LEASE; `result` EQUAL, GREATER, LESS, NOT_EQUAL."""
    body: dict = {"key": b64(key), "target": target, "result": result}
    field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version",
             "VALUE": "value", "LEASE": "lease"}[target]
    body[field] = b64(value) if isinstance(value, bytes) else str(value)
    return body


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: tuple[dict, ...]

    def range_kvs(self, index: int) -> list[KeyValue]:
        return [KeyValue.from_json(kv) for kv in self.responses[index].get("response_range", {}).get("kvs", [])]


# ------------------------------------------------------------------ the client


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], timeout: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [e.removeprefix("http://").rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._conn: http.client.HTTPConnection | None = None

    # --- transport

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def rotate(self) -> None:
        """Use the next endpoint from now on."""
        self._rotate()

    def _rotate(self) -> None:
        self.close()
        self._current = (self._current + 1) % len(self.endpoints)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            host, _, port = self.endpoints[self._current].rpartition(":")
            self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
            self._conn.connect()
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn.sock.settimeout(timeout)
        return self._conn

    def call(self, path: str, body: dict, *, idempotent: bool = False, timeout: float | None = None) -> dict:
        """POST `body` to the gateway at `path`; failover over the endpoints, once round."""
        timeout = self.timeout if timeout is None else timeout
        payload = json.dumps(body).encode()
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            sent = False
            try:
                conn = self._connection(timeout)
                conn.request("POST", API + path, payload, {"Content-Type": "application/json"})
                sent = True  # written: from here on etcd may have acted on it
                res = conn.getresponse()
                data = res.read()
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                self._rotate()
                if sent and not idempotent:
                    # It may have reached etcd: the outcome is unknown, do not repeat it elsewhere.
                    raise EtcdUnavailable(f"etcd {path}: {exc!r} (outcome unknown)") from exc
                continue
            try:
                answer = json.loads(data) if data else {}
            except ValueError as exc:
                raise EtcdError(f"etcd {path}: not JSON ({res.status})") from exc
            if res.status == 200:
                return answer
            code = answer.get("code")
            message = answer.get("error") or answer.get("message") or f"HTTP {res.status}"
            if code in GRPC_UNAVAILABLE or res.status in (503, 504):
                last = EtcdUnavailable(f"etcd {path}: {message}", code)
                self._rotate()
                if idempotent:
                    continue
                raise last
            raise EtcdError(f"etcd {path}: {message}", code)
        if isinstance(last, EtcdUnavailable):
            raise last
        raise EtcdUnavailable(f"etcd {path}: no endpoint answered ({last!r})") from last

    # --- KV

    def range(self, key: bytes, range_end: bytes | None = None, *, revision: int = 0, limit: int = 0,
              serializable: bool = False, count_only: bool = False, keys_only: bool = False,
              newest_first: bool = False) -> tuple[int, list[KeyValue], bool]:
        """(header revision, kvs, more) of a linearizable (default) or local read; `newest_first`
        sorts by mod revision, descending."""
        body: dict = {"key": b64(key)}
        if keys_only:
            body["keys_only"] = True
        if newest_first:
            body["sort_target"] = "MOD"
            body["sort_order"] = "DESCEND"
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if serializable:
            body["serializable"] = True
        if count_only:
            body["count_only"] = True
        answer = self.call("kv/range", body, idempotent=True)
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs", [])]
        return int(answer["header"]["revision"]), kvs, bool(answer.get("more"))

    def read_prefix(self, prefix: bytes, page: int = 2000) -> tuple[int, list[KeyValue]]:
        """Everything under `prefix` at one revision R (paged, each page pinned at R)."""
        end = prefix_end(prefix)
        revision, kvs, more = self.range(prefix, end, limit=page)
        out = list(kvs)
        while more:
            start = out[-1].key + b"\0"
            _, kvs, more = self.range(start, end, revision=revision, limit=page)
            out.extend(kvs)
        return revision, out

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        body = op_put(key, value, lease)["request_put"]
        return int(self.call("kv/put", body)["header"]["revision"])

    def delete(self, key: bytes, range_end: bytes | None = None) -> tuple[int, int]:
        body = op_delete(key, range_end)["request_delete_range"]
        answer = self.call("kv/deleterange", body)
        return int(answer["header"]["revision"]), int(answer.get("deleted", 0))

    def txn(self, compares: list[dict], success: list[dict], failure: list[dict] = (),
            timeout: float | None = None) -> TxnResult:
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        answer = self.call("kv/txn", body, timeout=timeout)
        return TxnResult(bool(answer.get("succeeded")), int(answer["header"]["revision"]),
                         tuple(answer.get("responses", ())))

    def compact(self, revision: int, physical: bool = True) -> None:
        self.call("kv/compaction", {"revision": str(revision), "physical": physical}, timeout=10.0)

    # --- leases

    def lease_grant(self, ttl: int, lease_id: int = 0) -> tuple[int, int]:
        answer = self.call("lease/grant", {"TTL": str(ttl), "ID": str(lease_id)})
        if answer.get("error"):
            raise EtcdError(f"etcd lease/grant: {answer['error']}")
        return int(answer["ID"]), int(answer["TTL"])

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease; its TTL, or 0 when the lease no longer exists."""
        answer = self.call("lease/keepalive", {"ID": str(lease_id)}, idempotent=True)
        return int(answer.get("result", answer).get("TTL", 0))

    def lease_revoke(self, lease_id: int) -> None:
        try:
            self.call("kv/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on a lease, -1 when it does not exist."""
        answer = self.call("kv/lease/timetolive", {"ID": str(lease_id)}, idempotent=True)
        return int(answer.get("TTL", -1))

    # --- cluster

    def status(self, timeout: float | None = None) -> dict:
        return self.call("maintenance/status", {}, idempotent=True, timeout=timeout)

    # --- watch

    def watch(self, key: bytes, range_end: bytes | None, start_revision: int,
              connect_timeout: float | None = None) -> "Watch":
        """A watch from `start_revision`, on the first endpoint that accepts it."""
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[self._current]
            try:
                return Watch(endpoint, key, range_end, start_revision, connect_timeout or self.timeout)
            except (OSError, http.client.HTTPException, EtcdUnavailable) as exc:
                last = exc
                self._rotate()
        raise EtcdUnavailable(f"etcd watch: no endpoint accepted it ({last!r})") from last


class Watch:
    """One watch stream.  Iterate `responses()`; `close()` from any thread ends it."""

    def __init__(self, endpoint: str, key: bytes, range_end: bytes | None, start_revision: int,
                 timeout: float) -> None:
        self.endpoint = endpoint
        self._closed = threading.Event()
        host, _, port = endpoint.rpartition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        request: dict = {"key": b64(key), "start_revision": str(start_revision), "progress_notify": True}
        if range_end is not None:
            request["range_end"] = b64(range_end)
        try:
            # Grpc-Metadata-Hasleader: etcd cancels the watch when its member loses the leader
            # (a partitioned member would otherwise keep the stream open and silent).
            self._conn.request("POST", API + "watch", json.dumps({"create_request": request}).encode(),
                               {"Content-Type": "application/json", "Grpc-Metadata-Hasleader": "true"})
            self._res = self._conn.getresponse()
            if self._res.status != 200:
                raise EtcdUnavailable(f"etcd watch: HTTP {self._res.status}")
            first = self._next()
        except BaseException:
            self._conn.close()
            raise
        if first.get("compact_revision") and first.get("canceled"):
            self._conn.close()
            raise WatchCompacted(int(first["compact_revision"]))
        if not first.get("created"):
            self._conn.close()
            raise EtcdError(f"etcd watch not created: {first}")
        self._conn.sock.settimeout(None)  # the stream is idle as long as nothing changes

    def _next(self) -> dict:
        line = self._res.readline()
        if not line:
            raise EtcdUnavailable(f"etcd watch stream from {self.endpoint} ended")
        message = json.loads(line)
        if "error" in message:
            raise EtcdUnavailable(f"etcd watch: {message['error']}")
        return message.get("result", {})

    def responses(self) -> Iterator[WatchResponse]:
        """Each response in order; raises WatchCompacted, or EtcdUnavailable when the stream ends."""
        try:
            while True:
                try:
                    result = self._next()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    if self._closed.is_set():
                        return
                    raise EtcdUnavailable(f"etcd watch stream from {self.endpoint}: {exc!r}") from exc
                except EtcdUnavailable:
                    if self._closed.is_set():
                        return
                    raise
                if result.get("canceled"):
                    if result.get("compact_revision"):
                        raise WatchCompacted(int(result["compact_revision"]))
                    raise EtcdUnavailable(f"etcd watch canceled: {result.get('cancel_reason', '')}")
                events = tuple(WatchEvent(e.get("type", "PUT"), KeyValue.from_json(e["kv"]))
                               for e in result.get("events", ()))
                yield WatchResponse(int(result.get("header", {}).get("revision", 0)), events)
        finally:
            self._conn.close()

    def close(self) -> None:
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
