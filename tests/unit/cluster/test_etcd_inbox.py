"""The store's callbacks reach a selectors loop through an Inbox (the Map-Server loop's way in)."""

from __future__ import annotations

import selectors
import threading

from lisp_ryu.glue.etcd_store import Inbox


def test_posts_from_other_threads_wake_the_loop_in_order():
    inbox = Inbox()
    selector = selectors.DefaultSelector()
    selector.register(inbox, selectors.EVENT_READ)
    try:
        assert selector.select(0) == [] and inbox.drain() == []
        threads = [threading.Thread(target=lambda n=n: [inbox.post((n, i)) for i in range(100)]) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert selector.select(1)
        items = inbox.drain()
        assert len(items) == 300
        for n in range(3):
            assert [i for m, i in items if m == n] == list(range(100))
        assert selector.select(0) == []
    finally:
        selector.close()
        inbox.close()
