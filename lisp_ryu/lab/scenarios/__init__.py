"""Measurements on a running lab: a host's move under a 10 ms ping (`mobility`),
an RLOC's failover when its link is cut (`failover`), and the prober and
flow monitor both record with (`probe`)."""
