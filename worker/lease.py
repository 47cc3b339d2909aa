"""A claimed chunk's lease, kept on a timer while the chunk is scored and written."""

from __future__ import annotations

import logging
import threading

from reviewscore.core import chunks

log = logging.getLogger(__name__)


class ChunkLostError(Exception):
    """This attempt no longer holds its chunk: another claim took it, or its job was cancelled."""


class LeaseKeeper:
    """Keeps a claimed chunk's lease on a timer from the claim on: a daemon thread renews it every
    third of the lease, whatever the scorer does meanwhile (a model load, one long call), so only
    a silent worker loses its chunk. Calling the keeper raises ChunkLostError once a renewal found
    the chunk no longer ours; `confirm` renews once more before the results are written."""

    # The shortest wait between renewals: a zero lease (tests) must not spin the thread.
    MIN_EVERY_S = 0.05

    def __init__(self, work: chunks.ChunkWork, lease_s: float) -> None:
        self.work = work
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._keep, name=f"lease-{work.job_id}/{work.seq}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _keep(self) -> None:
        every = max(self.lease_s / 3, self.MIN_EVERY_S)
        while not self._stop.wait(every):
            try:
                renewed = chunks.renew_lease(self.work, self.lease_s)
            except Exception:  # noqa: BLE001 - the database is away: try again next tick
                log.warning("chunk %s/%s: could not renew its lease", *self._key(), exc_info=True)
                continue
            if not renewed:
                self.lost.set()
                return

    def _key(self) -> tuple[str, int]:
        return self.work.job_id, self.work.seq

    def __call__(self) -> None:
        if self.lost.is_set():
            raise ChunkLostError("chunk {}/{} is no longer ours".format(*self._key()))

    def confirm(self) -> None:
        """Before writing: the chunk must still be ours (a stale attempt stops here)."""
        self()
        if not chunks.renew_lease(self.work, self.lease_s):
            self.lost.set()
            self()
