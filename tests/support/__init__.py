"""Test helpers shared by the suites: packet builders, the flow-table simulator, an in-memory underlay."""
