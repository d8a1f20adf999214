"""The embedded default's in-memory broker wakes its consumer on a put (no 1 s polling)."""

from __future__ import annotations

import threading

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from app.jobs.memory_broker import TRANSPORT, Transport

HOUR = 3600.0


def _connection() -> Connection:
    # A polling interval of an hour: a consumer that only polled would not see the message.
    options = {"polling_interval": HOUR}
    return Connection("memory://", transport=TRANSPORT, transport_options=options)


def test_the_celery_app_uses_it_in_the_embedded_default(embedded_env) -> None:  # type: ignore[no-untyped-def]
    from app.jobs.broker import make_celery

    with make_celery().connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.transport.driver_type == "memory"


def test_a_waiting_consumer_gets_a_message_put_while_it_waits() -> None:
    queue = Queue("wake-test", Exchange("wake-test"), routing_key="wake-test")
    received: list[dict[str, str]] = []
    with _connection() as consumer_conn, _connection() as producer_conn:
        consumer = Consumer(consumer_conn, [queue], accept=["json"])
        consumer.register_callback(lambda body, message: (received.append(body), message.ack()))
        with consumer:
            waiting = threading.Thread(
                target=consumer_conn.drain_events, kwargs={"timeout": HOUR}, daemon=True
            )
            waiting.start()
            Producer(producer_conn).publish(
                {"job": "1"}, exchange=queue.exchange, routing_key="wake-test", declare=[queue]
            )
            waiting.join(timeout=60)  # a guard against hanging the suite, not a speed check
            assert not waiting.is_alive()
    assert received == [{"job": "1"}]


def test_nothing_to_deliver_still_times_out() -> None:
    queue = Queue("idle-test", Exchange("idle-test"), routing_key="idle-test")
    with (
        _connection() as connection,
        Consumer(connection, [queue], accept=["json"]),
        pytest.raises(TimeoutError),
    ):
        connection.drain_events(timeout=0.05)
