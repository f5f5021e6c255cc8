"""upgradectl: upgrade nodes of long-session services without cutting anyone off."""

__version__ = "0.1.0"
