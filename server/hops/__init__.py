"""Acks across hops: what each device has shown, and the actions of assessments as commands."""
