"""A fresh 3-member etcd cluster per test (about half a second), stopped whatever happens."""

from __future__ import annotations

import pytest

from support.etcd_cluster import EtcdCluster, available


@pytest.fixture
def etcd_cluster():
    if not available():
        pytest.skip("no etcd binary (Debian etcd-server; `make test` installs it)")
    cluster = EtcdCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def stores():
    """Stores a test opens; each is stopped at the end (roles resigned unless already stopped)."""
    opened = []
    yield opened
    for store in opened:
        store.stop()
