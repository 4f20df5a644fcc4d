"""The avatar saga and its wiring (generator, media store, retries)."""
