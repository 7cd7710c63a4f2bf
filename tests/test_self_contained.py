"""The repository explains itself: no code or doc cites documents that are not in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"SPEC (section|§)|SPEC's|\bnotes/\w+\.md|DESIGN\.md|\.\./shared/")


def test_nothing_cites_documents_outside_the_repository() -> None:
    offenders = []
    for folder in ("wfsched", "plugins", "examples", "benchmarks", "docs", "tests", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in {".py", ".md", ".toml", ".sh", ""} or not path.is_file():
                continue
            if "fixtures" in path.parts or path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for name in ("README.md", "CHANGELOG.md", "pyproject.toml", "Dockerfile"):
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
