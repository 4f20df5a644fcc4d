"""The operator's view of the fleet: membership, node records, the fleet view and ``/ops``."""
