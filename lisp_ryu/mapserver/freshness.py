"""Map-Register anti-replay: is this authenticated Map-Register one the ETR sends now, or a captured one resent?

RFC 9301 authenticates a Map-Register but leaves replay open (§5.6: the nonce
"may be" part of a future anti-replay solution).  A replay is always a message
the ETR really sent, so the question is only whether it is *current*.  What is
decided here, per ETR (its xTR-ID, or its source address without the I bit):

* **Sequenced nonces (our xTR).**  A nonce whose top 12 bits are
  `SEQUENCE_TAG` carries a counter that only grows (a timestamp, see
  `lisp_ryu.xtr.state.XtrState.register_nonce`).  When the ETR's last
  accepted nonce was sequenced too, a new one must be greater: every older
  message, refresh or change, from anywhere, is refused.  A random nonce
  looks sequenced once in 4096; both in a row once in 16 million, and then the
  cost is one refused refresh.
* **Other ETRs (random or zero nonces, e.g. Open Overlay Router)**, best effort:
  - a message already accepted from another address is taken again only
    from that address or from one of the RLOCs it registers (no third party
    becomes an ETR, no Map-Notify or forwarded Map-Request goes to it);
  - an xTR-ID's registration moves to a new address only when that address
    is one of the RLOCs registered (the ETR renumbered), so a withdrawal or an
    old mapping from anywhere else is refused;
  - an ETR whose nonces vary: a message accepted before and superseded since
    is refused when it would change what the ETR has registered (resent as a
    mere refresh, e.g. a retransmission, it changes nothing and is taken); an
    ETR with a constant nonce re-sends identical bytes when it flaps back,
    which cannot be told from a replay, so there it is accepted;
  - a message already accepted never takes a prefix over from another site
    (`is_new`): the workload moved away after it was sent.
* **Byte-identical refreshes** from the registrant are the normal case and
  are accepted.
* **How long**: what is known of an ETR (and of a message) lasts as long as the
  registrations it made (`until`), then it is forgotten.  So nothing locks an
  ETR out for longer than one registration lifetime (its clock stepped back,
  it renumbered to an address it does not register), and memory is bounded by
  the live registrations (and by `capacity`).

Limits, said plainly: an attacker who can spoof the ETR's own address can
replay its latest message (a no-op) and, for an ETR with a constant nonce, an
older one.  The last nonce is journalled with each registration
(`EtrRegistration.nonce`), so after a restart the check against the
registration a message changes still holds; the message digests are not kept.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from lisp_ryu.mapserver.state import EtrRegistration, IPAddress
from lisp_ryu.wire import MapRegister

SEQUENCE_TAG = 0x4C5
SEQUENCE_SHIFT = 52
#: ETRs and messages remembered at most (least recently accepted forgotten first).
CAPACITY = 65_536
#: Superseded messages remembered per ETR (an ETR with varying nonces).
OLDER = 8


def sequenced(nonce: int | None) -> bool:
    return nonce is not None and nonce >> SEQUENCE_SHIFT == SEQUENCE_TAG


@dataclass(slots=True)
class EtrHistory:
    """What was last accepted from one ETR."""

    nonce: int
    digest: bytes  # the authentication data of that message: it names the message
    source: IPAddress
    until: float  # forget it then (its registrations have expired)
    nonces_vary: bool = False
    older: deque = field(default_factory=lambda: deque(maxlen=OLDER))


class ReplayGuard:
    """Accepts or refuses Map-Registers by what was accepted before (see the module docstring)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._etrs: OrderedDict[str, EtrHistory] = OrderedDict()
        self._messages: OrderedDict[bytes, tuple[IPAddress, float]] = OrderedDict()  # digest -> (source, until)

    def _history(self, etr: str, now: float, live: EtrRegistration | None) -> EtrHistory | None:
        history = self._etrs.get(etr)
        if history is not None and history.until <= now:
            del self._etrs[etr]
            history = None
        if history is None and live is not None:
            # Not seen since a restart: what the journal kept of the registration it would change.
            history = EtrHistory(live.nonce if live.nonce is not None else -1, b"", live.source, live.expires)
        return history

    def check(self, etr: str, message: MapRegister, source: IPAddress, now: float,
              live: EtrRegistration | None, changes: bool = True) -> tuple[str, str] | None:
        """None to accept, or (reason, detail) to refuse.  `live`: this ETR's current registration
        of a prefix in the message, if any; `changes`: whether the message changes what this ETR
        has registered (False: a refresh, or an old message resent that says what holds now)."""
        return self.check_fields(etr, message.nonce, message.authentication_data, source, _rlocs(message), now,
                                 live, changes)

    def check_fields(self, etr: str, nonce: int, digest: bytes, source: IPAddress, rlocs: set | frozenset,
                     now: float, live: EtrRegistration | None, changes: bool = True) -> tuple[str, str] | None:
        """`check` from the message's fields: its nonce, authentication data and registered RLOC addresses
        (what the registry's refresh shortcut has without decoding the message)."""
        from_rloc = source in rlocs
        seen = self._messages.get(digest)
        if seen is not None and seen[1] > now and seen[0] != source and not from_rloc:
            return "replayed-elsewhere", f"a message accepted from {seen[0]}, resent from another address"
        history = self._history(etr, now, live)
        if history is None:
            return None
        if sequenced(nonce) and sequenced(history.nonce):
            if nonce < history.nonce or (nonce == history.nonce and (digest != history.digest
                                                                      or source != history.source)):
                return "stale-nonce", f"nonce {nonce:#x} is not after the last accepted {history.nonce:#x}"
            return None  # only the ETR can send a nonce not sent before: from wherever it is now
        if changes and history.nonces_vary and digest in history.older:
            return "replayed", "a message accepted before and superseded since"
        if source != history.source and not from_rloc:
            return "source-changed", (f"registered from {history.source}, this comes from an address "
                                      "that is none of its RLOCs")
        return None

    def is_new(self, etr: str, message: MapRegister, now: float) -> bool:
        """Whether the message was not accepted before from this ETR (only a new one may take a prefix over)."""
        history = self._history(etr, now, None)
        digest = message.authentication_data
        return history is None or (digest != history.digest and digest not in history.older)

    def accepted(self, etr: str, message: MapRegister, source: IPAddress, until: float) -> None:
        self.accepted_fields(etr, message.nonce, message.authentication_data, source, until)

    def accepted_fields(self, etr: str, nonce: int, digest: bytes, source: IPAddress, until: float) -> None:
        """`accepted` from the message's nonce and authentication data."""
        history = self._etrs.get(etr)
        if history is None:
            self._etrs[etr] = EtrHistory(nonce, digest, source, until)
        else:
            if digest != history.digest:
                history.older.append(history.digest)
            history.nonces_vary |= nonce != history.nonce
            history.nonce, history.digest, history.source = nonce, digest, source
            history.until = max(history.until, until)
            self._etrs.move_to_end(etr)
        self._messages[digest] = (source, until)
        self._messages.move_to_end(digest)
        for table in (self._etrs, self._messages):
            while len(table) > self._capacity:
                table.popitem(last=False)


def _rlocs(message: MapRegister) -> set:
    return {locator.address for record in message.records for locator in record.locators}
