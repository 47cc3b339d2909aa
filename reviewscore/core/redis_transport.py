"""kombu's Redis transport with the one fix a Celery worker needs to outlive a Redis restart.

When the connection to Redis drops, Celery's consumer first `collect()`s the connection: that
closes the channel, then the transport (the transport's `client` becomes None). Closing the
channel stops half-way if its pending BRPOP read fails on the dead socket (a connection error
kombu swallows), so the channel is not marked closed. The consumer then closes the connection
again; the half-closed channel, holding unacknowledged messages (tasks in flight), tries to
put them back through a new connection pool built from the transport's `client`: None, an
AttributeError ("'NoneType' object has no attribute 'hostname'") the consumer does not expect,
and the worker stops ("Unrecoverable error"). Measured, Redis SIGKILLed under load: 3 crashes
in 4 kills with the unix-socket URL, 2 in 8 over TCP; 0 with this transport.

Here that late attempt fails as what it is, a connection error, which the consumer ignores
before it reconnects as usual. The messages stay in Redis's unacked set (restored after the
visibility timeout; lost chunks are sent again by the sweeper meanwhile).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the connection to Redis was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel

    @property
    def supports_batch_publish(self) -> bool:
        if self.client is None:  # closed: publish one by one (the publish then fails cleanly)
            return False
        return bool(kombu_redis.Transport.supports_batch_publish.fget(self))  # type: ignore[attr-defined]


def install() -> None:
    """Makes `redis://` (and `rediss://`) URLs use this transport. An alias rather than Celery's
    `broker_transport` class path, so URLs keep their scheme (Flower and the worker's banner
    read it)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
