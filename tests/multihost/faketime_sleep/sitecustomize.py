"""Loaded only by the skewed-clock worker of the multi-host suite (its PYTHONPATH starts here).

Under libfaketime 0.9.10 with the monotonic clock left true (FAKETIME_DONT_FAKE_MONOTONIC=1, so
timers and timed waits keep working), Python's time.sleep fails with EINVAL: libfaketime shifts
the absolute monotonic deadline that time.sleep hands to clock_nanosleep. select() takes a
relative timeout, which libfaketime leaves alone, so sleeping goes through it instead. Nothing
of the service's own code changes.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep  # type: ignore[assignment]
