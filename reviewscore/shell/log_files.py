"""The log files of `reviewscore run`'s children: each child's output goes through a pipe into a
file that rolls over past a size (as logging's RotatingFileHandler does for records), so logs
of a service left running never fill the disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

READ_BYTES = 65536


class RotatingLog:
    """`path`, moved to `path.1` (and `.1` to `.2`, ...; `backups` of them kept) once it holds
    `max_bytes`; a rollover happens after a whole line where the output allows it."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._open()

    def _open(self) -> None:
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open until the next rollover
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                return
            while self.size + len(data) > self.max_bytes:
                # What fits, up to its last whole line; a line longer than a whole file is cut.
                room = self.max_bytes - self.size
                cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
                if cut == 0 and self.size == 0:
                    cut = room
                self._file.write(data[:cut])
                data = data[cut:]
                self._rollover()
            self._file.write(data)
            self._file.flush()
            self.size += len(data)

    def _rollover(self) -> None:
        assert self._file is not None
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ChildLog:
    """A child's output pipe, copied into a RotatingLog by a thread until the pipe closes (the
    child and everything it started have exited)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.log = RotatingLog(path, max_bytes, backups)
        self.read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._copy, name=f"log-{path.stem}", daemon=True)
        self._thread.start()

    def child_started(self) -> None:
        """The child holds its own copy of the pipe's write end: ours goes, so the copy
        thread sees the end of the output once the child's side is closed."""
        os.close(self.write_fd)

    def _copy(self) -> None:
        try:
            while data := os.read(self.read_fd, READ_BYTES):
                self.log.write(data)
        finally:
            os.close(self.read_fd)
            self.log.close()

    def close(self, timeout: float = 5.0) -> None:
        """Waits (a while) for the rest of the output, then closes the file."""
        self._thread.join(timeout)
        self.log.close()
