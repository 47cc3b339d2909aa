"""Loaded only by a process whose wall clock a test shifts (its PYTHONPATH starts here, as
tests/test_singles_clock.py starts a worker): the wall clock reads
REVIEWSCORE_TEST_CLOCK_OFFSET_S seconds ahead (negative: behind), as on a host whose clock has
jumped; the monotonic clock stays true, as the chaos suite's libfaketime leaves it
(FAKETIME_DONT_FAKE_MONOTONIC). It stands in where libfaketime is not installed; nothing of the
service's own code changes.

time.time() and time.time_ns() are shifted everywhere (this runs before any module takes
their names). datetime.now() is shifted where Celery and kombu call it (Celery's expiry check
among them): replacing datetime.datetime itself would break C extensions built against it
(pandas), so the name `datetime` is swapped in those modules' globals as each is imported.
"""

import datetime
import importlib.abc
import importlib.machinery
import os
import sys
import time
import types

_OFFSET_S = float(os.environ.get("REVIEWSCORE_TEST_CLOCK_OFFSET_S", "0"))
_SHIFT = datetime.timedelta(seconds=_OFFSET_S)
_REAL_TIME = time.time
_REAL_TIME_NS = time.time_ns
_REAL_DATETIME = datetime.datetime
_SHIFTED_PACKAGES = ("celery", "kombu")


def _time() -> float:
    return _REAL_TIME() + _OFFSET_S


def _time_ns() -> int:
    return _REAL_TIME_NS() + int(_OFFSET_S * 1e9)


class _AnyDatetime(type):
    # Values are real datetimes: isinstance() against the swapped name still holds.
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _REAL_DATETIME)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_DATETIME)


class _ShiftedDatetime(_REAL_DATETIME, metaclass=_AnyDatetime):
    """datetime with a shifted now(); every value it makes is a plain datetime."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _REAL_DATETIME(*args, **kwargs)

    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def]
        return _REAL_DATETIME.now(tz) + _SHIFT

    @classmethod
    def utcnow(cls):  # type: ignore[no-untyped-def]
        return _REAL_DATETIME.utcnow() + _SHIFT

    @classmethod
    def today(cls):  # type: ignore[no-untyped-def]
        return _REAL_DATETIME.today() + _SHIFT


class _SwapDatetime(importlib.abc.MetaPathFinder):
    """After a module of Celery or kombu runs, its global `datetime` (the class) is shifted."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] not in _SHIFTED_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            if module.__dict__.get("datetime") is _REAL_DATETIME:
                module.datetime = _ShiftedDatetime  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _OFFSET_S:
    time.time = _time
    time.time_ns = _time_ns
    sys.meta_path.insert(0, _SwapDatetime())
