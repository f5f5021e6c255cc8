"""docs/architecture.md names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

import upgradectl

PACKAGE = Path(upgradectl.__file__).parent
PAGE = PACKAGE.parent / "docs" / "architecture.md"


def named_on_the_page() -> set[str]:
    """Every ``name.py`` or ``folder/name.py`` the page writes in backticks (tests aside)."""
    found = re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", PAGE.read_text(encoding="utf-8"))
    return {name for name in found if not name.startswith("tests/")}


def modules() -> set[str]:
    """Every module of the package as a path under upgradectl/ (package __init__ files aside)."""
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def test_every_module_the_architecture_page_names_exists() -> None:
    assert named_on_the_page() - modules() == set()


def test_every_module_of_the_package_is_named_on_the_architecture_page() -> None:
    assert modules() - named_on_the_page() == set()
