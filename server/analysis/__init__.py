"""Analysis of each user's window: pipeline, scheduler, reactor, frame retention."""
