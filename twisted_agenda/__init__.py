"""A replicated, durable contact book built on Twisted."""

__version__ = "0.1.0"
