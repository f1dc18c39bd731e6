"""The thin layer between the pure cores and the world: OpenFlow, UDP sockets, timers, REST, processes."""
