"""The push edge: the socket transport, one connection's session, the hub and its outboxes."""
