"""The multi-site OVS lab: LISP sites as network namespaces on one machine.

`topology` loads a YAML topology file (pure), `manager` builds and tears
down the lab (namespaces, veths, one ovsdb-server + ovs-vswitchd per site),
`static_flows` programs the sites without a controller, `netns` opens
sockets inside a namespace, `demo` shows a ping through LISP-GPE and `cli`
is the `lisp-ryu lab` command.
"""
