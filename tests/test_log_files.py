"""`reviewscore run`'s logs (reviewscore/shell/log_files.py): a child's output rolls over past
REVIEWSCORE_LOG_MAX_BYTES, and only REVIEWSCORE_LOG_BACKUPS older files are kept."""

from __future__ import annotations

import sys
from pathlib import Path

from reviewscore.core.settings import Settings
from reviewscore.shell.runner import Stack
from tests.conftest import wait_for

LINE = "x" * 99  # with its newline, 100 bytes


def test_a_childs_log_rolls_over_and_keeps_only_the_last_files(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", log_max_bytes=10_000, log_backups=2)
    stack = Stack(settings)
    # 600 lines of 100 bytes: 60,000 bytes through a log of 10,000 bytes and 2 older files.
    loud = f"import sys\nfor i in range(600): print(f'{{i:05d}} {LINE[6:]}')"
    child = stack.spawn("loud", [sys.executable, "-c", loud])
    wait_for(lambda: child.process.poll() is not None, 30, "the child to finish")
    stack.stop()
    logs = stack.log_dir
    files = sorted(p.name for p in logs.iterdir())
    assert files == ["loud.log", "loud.log.1", "loud.log.2"]
    sizes = [(logs / name).stat().st_size for name in files]
    assert all(0 < size <= 10_000 for size in sizes), sizes
    # Whole lines in each file, the newest output in loud.log, the oldest files gone.
    lines = [(logs / name).read_text().splitlines() for name in reversed(files)]
    kept = [line for part in lines for line in part]
    assert all(len(line) == 99 for line in kept)
    assert kept[-1].startswith("00599") and len(kept) == 300
