"""blueprint-net: authenticated peer-to-peer messaging for Twisted."""

__version__ = "0.1.0"
