"""``python -m wfsched``."""

from __future__ import annotations

from wfsched.cli import main

main()
