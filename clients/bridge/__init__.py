"""The phone bridge: one WebSocket to the server, relaying to watches."""
