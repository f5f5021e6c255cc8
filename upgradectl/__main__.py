"""``python -m upgradectl``."""

from upgradectl.cli import main

main()
