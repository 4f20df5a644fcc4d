"""Brokers carry messages for one user's channel between server nodes."""
