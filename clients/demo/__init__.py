"""The guided demo: a story of scenarios played against a server."""
