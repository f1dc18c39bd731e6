"""The xTR control plane as a pure state machine (no sockets, no Ryu, no clock)."""
