"""The chaos run uses the multi-host suite's hosts: the same fixture, made for this module."""

from tests.multihost.conftest import hosts  # noqa: F401 - the fixture, reused
