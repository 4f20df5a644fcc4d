"""The load generator: device fleets, the state-change driver and their statistics."""
