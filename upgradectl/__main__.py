"""``python -m upgradectl``."""

from upgradectl.cli import run

run()
