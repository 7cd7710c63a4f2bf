"""Every library the package imports is a declared dependency (or comes with one's extra):
one installed only as another's dependency, or for the tests, can vanish from a user's install."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def imported_libraries() -> dict[str, str]:
    """Top-level third-party module -> a file of ``wfsched`` importing it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "wfsched").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "wfsched" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def declared_distributions() -> set[str]:
    """The declared dependencies (and the otel extra), with what their requested extras add."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: set[str] = set()
    for line in [*project["dependencies"], *project["optional-dependencies"]["otel"]]:
        requirement = Requirement(line)
        declared.add(canonicalize_name(requirement.name))
        for extra in requirement.extras:
            for added in metadata.requires(requirement.name) or []:
                wanted = Requirement(added)
                if wanted.marker is not None and wanted.marker.evaluate({"extra": extra}):
                    declared.add(canonicalize_name(wanted.name))
    return declared


def test_every_imported_library_is_a_declared_dependency() -> None:
    providers = metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = [
        f"{module} (imported by {path})"
        for module, path in imported_libraries().items()
        if not {canonicalize_name(d) for d in providers.get(module, [module])} & declared
    ]
    assert not undeclared, "not declared in pyproject.toml: " + ", ".join(undeclared)
