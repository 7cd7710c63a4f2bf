"""``python -m benchmarks SUITE [--quick]``: run one suite (or ``all``) from the repo root."""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks.harness import emit, table

SUITES = ("cron", "dispatch", "ingress", "replicas", "scale", "ledger")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("suite", choices=(*SUITES, "all"))
    parser.add_argument("--quick", action="store_true", help="reduced variant (< 90 s)")
    args = parser.parse_args()
    rows = []
    for name in SUITES if args.suite == "all" else (args.suite,):
        module = importlib.import_module(f"benchmarks.{name}")
        rows.extend(emit(module.run(args.quick)))
    sys.stderr.write(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
