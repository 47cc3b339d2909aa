"""`python -m tests.chaos --seed S --minutes M`: one chaos run (the pytest case, with -s so its
table prints); exits non-zero on any violation."""

from __future__ import annotations

import argparse
import os
import sys

import pytest


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--seed", type=int, default=None, help="random if left out (printed)")
    parser.add_argument("--minutes", type=float, default=3.0)
    args, rest = parser.parse_known_args()
    if args.seed is not None:
        os.environ["CHAOS_SEED"] = str(args.seed)
    os.environ["CHAOS_MINUTES"] = str(args.minutes)
    return int(pytest.main(["tests/chaos/test_chaos.py", "-s", "-p", "no:cacheprovider", *rest]))


if __name__ == "__main__":
    sys.exit(main())
