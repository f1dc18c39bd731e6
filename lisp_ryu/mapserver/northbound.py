"""What an operator states over REST: reachability rules, RLOC overrides, static mappings.

Each change is journalled, applied, and then exactly the subscribers whose
answer changed for any of their hosts get a Map-Notify, withdrawing first
(TTL-0 records) the prefixes or source/destination keys no answer uses any
more.  Static mappings live in their own table beside the registrations
(see `resolver` for which wins).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Iterator

from lisp_ryu.effects import SendControl
from lisp_ryu.mapping.policy import Policy, PolicyError, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver.journal import (
    Journal,
    override_entry,
    rule_entry,
    static_entry,
    unoverride_entry,
    unrule_entry,
    unstatic_entry,
)
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.resolver import Resolver
from lisp_ryu.mapserver.shaping import distinct, eid_text
from lisp_ryu.mapserver.state import NONCE_MASK, IPNetwork, State, Subscription, rlocs_text, static_record
from lisp_ryu.wire import AuthAlgorithm, MappingRecord

LOG = logging.getLogger("lisp_ryu.mapserver")


class Northbound:
    """Policy and static-mapping changes (`state.policy`, `state.static`) and the notifications they cause."""

    def __init__(self, state: State, journal: Journal, resolver: Resolver, pubsub: PubSub) -> None:
        self._state = state
        self._journal = journal
        self._resolver = resolver
        self._pubsub = pubsub
        self._count = state.count

    def set_rule(self, rule: Rule, now: float) -> list[SendControl]:
        """Add or replace a reachability rule; notify the subscribers whose answer changed."""
        policy = self._state.policy
        previous = policy.rule(rule.id)
        iids = {rule.iid} | ({previous.iid} if previous is not None else set())
        self._journal.record(rule_entry(rule))
        LOG.info("policy rule %s: %s %s -> %s iid %d", rule.id, rule.action.value,
                 ", ".join(map(str, rule.sources)) or "any", ", ".join(map(str, rule.destinations)), rule.iid)
        return self._change(lambda: self.set_policy(self._state.policy.with_rule(rule)), lambda s: s.iid in iids, now)

    def remove_rule(self, rule_id: str, now: float) -> list[SendControl]:
        """Remove a rule (KeyError if there is none by that id)."""
        previous = self._state.policy.rule(rule_id)
        if previous is None:
            raise KeyError(rule_id)
        self._journal.record(unrule_entry(rule_id))
        LOG.info("policy rule %s removed", rule_id)
        return self._change(lambda: self.set_policy(self._state.policy.without_rule(rule_id)),
                            lambda s: s.iid == previous.iid, now)

    def set_override(self, override: RlocOverride, now: float) -> list[SendControl]:
        """Add or replace an RLOC override (PolicyError if another one already targets its RLOC/site)."""
        new = self._state.policy.with_override(override)
        if override.site is not None and override.site not in self._state.sites:
            raise PolicyError("site", f"no configured site {override.site!r}")
        self._journal.record(override_entry(override))
        LOG.info("RLOC override %s: %s priority %s weight %s", override.id, override.rloc or f"site {override.site}",
                 override.priority, override.weight)
        return self._change(lambda: self.set_policy(new), lambda s: True, now)

    def remove_override(self, override_id: str, now: float) -> list[SendControl]:
        if self._state.policy.override(override_id) is None:
            raise KeyError(override_id)
        self._journal.record(unoverride_entry(override_id))
        LOG.info("RLOC override %s removed", override_id)
        return self._change(lambda: self.set_policy(self._state.policy.without_override(override_id)),
                            lambda s: True, now)

    def set_static(self, mapping: StaticMapping, now: float) -> list[SendControl]:
        """Add or replace a static mapping; notify the subscribers whose answer changed."""
        record = static_record(mapping)
        static = self._state.static
        self._journal.record(static_entry(mapping))
        LOG.info("static mapping %s iid %d -> %s", mapping.prefix, mapping.iid, rlocs_text(record))
        return self._change(lambda: static.insert(mapping.iid, mapping.prefix, (mapping, record)),
                            _overlapping(mapping.iid, mapping.prefix), now)

    def remove_static(self, iid: int, prefix: IPNetwork, now: float) -> list[SendControl]:
        static = self._state.static
        if static.get(iid, prefix) is None:
            raise KeyError(f"[{iid}]{prefix}")
        self._journal.record(unstatic_entry(iid, prefix))
        LOG.info("static mapping %s iid %d removed", prefix, iid)
        return self._change(lambda: static.remove(iid, prefix), _overlapping(iid, prefix), now)

    def static_mappings(self) -> Iterator[StaticMapping]:
        for _, _, (mapping, _record) in self._state.static:
            yield mapping

    def quietly(self, apply: Callable[[], object]) -> None:
        """Apply a change another node committed and notified for (replicated mode): no journal, no Map-Notify."""
        apply()
        self._resolver.refresh_fast_path()

    def set_policy(self, policy: Policy) -> None:
        self._state.policy = policy
        self._resolver.refresh_fast_path()
        self._count("policy.changes")

    def _change(self, apply: Callable[[], object], affected: Callable[[Subscription], bool],
                now: float) -> list[SendControl]:
        """Apply a policy/static change; Map-Notify every affected subscriber whose answer changed."""
        pubsub = self._pubsub
        subs = [sub for sub in pubsub.subscriptions() if affected(sub)]
        before = [self._subscriber_answers(sub) for sub in subs]
        apply()
        self._resolver.refresh_fast_path()  # a static mapping came or went
        effects: list[SendControl] = []
        for sub, olds in zip(subs, before):
            news = self._subscriber_answers(sub)
            changed = [(old, new) for old, new in zip(olds, news) if old != new]
            if not changed:
                continue
            # Withdraw first what the subscriber cached under a prefix or key no answer uses any more.
            kept = {(new.eid, new.eid_mask_len) for new in news}
            withdrawn = distinct(MappingRecord(old.eid, old.eid_mask_len, (), ttl=0) for old, _ in changed
                                 if (old.eid, old.eid_mask_len) not in kept)
            records = withdrawn + distinct(new for _, new in changed)
            new = records[-1]
            nonce = (sub.nonce + 1) & NONCE_MASK
            pubsub.set_subscription(replace(sub, nonce=nonce))
            effects.append(pubsub.notify(sub.itr_rloc, sub.port, nonce, records, pubsub.subscriber_site(sub),
                                         AuthAlgorithm.HMAC_SHA_1_96, None,
                                         f"Map-Notify for {eid_text(new)} to subscriber {sub.itr_rloc} "
                                         f"after a policy change", now))
            self._count("notify.policy")
        self._journal.flush()
        self._journal.maybe_compact()
        return effects

    def _subscriber_answers(self, sub: Subscription) -> list[MappingRecord]:
        """The answer for `sub`'s prefix as each of its hosts sees it (one, without a known host)."""
        address = sub.prefix.network_address
        answer = self._resolver.answer
        return [answer(sub.iid, address, source, sub.itr_rloc).record for source in sub.source_eids or (None,)]


def _overlapping(iid: int, prefix: IPNetwork) -> Callable[[Subscription], bool]:
    """A subscription filter: same instance-ID and a prefix overlapping `prefix`."""
    return lambda sub: sub.iid == iid and sub.prefix.version == prefix.version and sub.prefix.overlaps(prefix)
