"""lisp-ryu: a LISP control plane (RFC 9300/9301) as a Ryu app driving Open vSwitch."""

__version__ = "0.1.0"
