"""The command line: click and rich live here and nowhere below.

``commands`` parses and calls the core, ``options`` holds the shared option decorators,
``render`` turns what the reading commands return into text or JSON, ``views`` shows a run's
events as they happen. Nothing outside this package imports it.
"""

from upgradectl.cli.commands import main, run

__all__ = ["main", "run"]
