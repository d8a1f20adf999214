"""The embedded default's broker: kombu's in-memory transport, whose consumer wakes the
moment a message is put instead of polling its queues once a second.

kombu's `memory://` consumer sleeps `polling_interval` (1 s) whenever its queues are
empty, so every job of the embedded default waited half a second for its worker on average.
Producer and consumer share this process (the web side sends, the embedded worker
consumes), so a put sets an event the consumer waits on; the interval remains the fallback.
"""

from __future__ import annotations

import threading
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import memory

TRANSPORT = "app.jobs.memory_broker:Transport"
"""What the Celery app's `broker_transport` names for the embedded default."""

_put = threading.Event()
"""Set by every put; cleared by the consumer before it looks at its queues."""


class Channel(memory.Channel):  # type: ignore[misc]
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        _put.set()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _put.set()


class Transport(memory.Transport):  # type: ignore[misc]
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message, waiting for a put (at most `polling_interval` at a time,
        and `timeout` in all)."""
        started = monotonic()
        while True:
            _put.clear()  # before looking: a put from now on wakes the wait below
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait = self.polling_interval
            if timeout is not None:
                left = timeout - (monotonic() - started)
                if left <= 0:
                    raise TimeoutError  # socket.timeout, as kombu's transports raise
                wait = min(wait, left)
            _put.wait(wait)
