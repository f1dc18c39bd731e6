"""The multi-site OVS lab: LISP sites as network namespaces on one machine.

`topology` loads a YAML topology file (pure) and `state` is the state file
of a running lab.  `build` brings a lab up (namespaces, veths, addresses,
routes; `ovs` starts each site's own ovsdb-server + ovs-vswitchd and builds
its bridges), `teardown` removes it (also after a crash), `move` moves a
host to another site as a live migration does, `running` is how other code
reaches a lab that is up (commands in its nodes, OVS's tools, its status),
and `processes` runs commands and handles processes for all of them.
`static_flows` programs the sites without a controller, `controller` runs
the lisp-ryu controller on a lab, `netns` opens sockets inside a namespace,
`rtnetlink` and `capture` serve the move and the tests, `scenarios` holds
the mobility and failover measurements, `demo` shows a ping through
LISP-GPE and `cli` is the `lisp-ryu lab` command.
"""
