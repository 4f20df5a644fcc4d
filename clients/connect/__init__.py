"""What every client needs to reach a server: endpoints and tokens, reconnects, a WebSocket."""
