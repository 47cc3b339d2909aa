"""Redis is shared by every process on every host, so each key the service writes has one
owner: its name is spelled in reviewscore/core/redis_keys.py and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from reviewscore.core import redis_keys

REPO = Path(__file__).resolve().parent.parent


def test_redis_key_names_are_spelled_only_in_redis_keys() -> None:
    elsewhere = []
    for package in ("reviewscore", "api", "worker"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "reviewscore" / "core" / "redis_keys.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith("reviewscore:")
                    and ":" in node.value[len("reviewscore:") :].split()[0]
                ):
                    elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert elsewhere == []


def test_each_key_has_one_name() -> None:
    names = [v for k, v in vars(redis_keys).items() if k.isupper()]
    assert len(set(names)) == len(names)
    # A prefix (ending in ":") is followed by an id: no other key may start with it.
    for prefix in (n for n in names if n.endswith(":")):
        assert [n for n in names if n.startswith(prefix)] == [prefix]
