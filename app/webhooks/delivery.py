"""Delivering webhooks: claim a due row, POST it signed, record the answer; at least once.

A row is claimed by a conditional UPDATE that moves its `next_attempt_at` a lease ahead,
so any number of dispatchers (one per worker process, one in the embedded web process) can
share the table, and an attempt whose process died is simply due again when its lease ends.
Only a 2xx answer marks a delivery delivered; anything else (an error status, a redirect,
a timeout, a refused connection) is retried after a growing delay until the attempts run
out. The receiver may therefore see a webhook more than once: `Webhook-Id` tells repeats.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update

from app.config import Settings, get_settings
from app.db import session_scope
from app.orm import utcnow
from app.users.models import User
from app.webhooks.models import DeliveryState, WebhookDelivery
from app.webhooks.signing import new_secret, signed_headers
from app.webhooks.urls import delivery_refusal

log = logging.getLogger(__name__)

RETRY_FACTORS = (1, 6, 30, 180, 720)
"""Delays after the 1st, 2nd, … failed attempt, in units of `webhook_retry_base_s`
(default 10 s, 1 min, 5 min, 30 min, 2 h; further attempts wait as long as the last)."""
PARALLEL = 4
"""Deliveries in flight at once per dispatcher: one slow receiver does not hold up others."""
BATCH = 50
ERROR_MAX_CHARS = 500


def retry_delay_s(failed_attempts: int, settings: Settings) -> float:
    factor = RETRY_FACTORS[min(failed_attempts, len(RETRY_FACTORS)) - 1]
    return settings.webhook_retry_base_s * factor


def lease_s(settings: Settings) -> float:
    """How long a claimed attempt keeps the row: past any attempt's timeouts, with margin."""
    return 4 * settings.webhook_timeout_s + 30


@dataclass(frozen=True)
class Attempt:
    delivery_id: uuid.UUID
    webhook_id: str
    url: str
    body: str
    secret: str


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None
    give_up: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def due(now: datetime | None = None, limit: int = BATCH) -> list[uuid.UUID]:
    """Pending deliveries whose time has come, oldest due first."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.state == DeliveryState.pending,
                    WebhookDelivery.next_attempt_at <= (now or utcnow()),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )


def claim(delivery_id: uuid.UUID, now: datetime | None = None) -> Attempt | None:
    """Take one due delivery for an attempt (None if it is not due, or someone took it)."""
    now = now or utcnow()
    with session_scope() as session:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.state == DeliveryState.pending,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + timedelta(seconds=lease_s(get_settings())))
        ).rowcount
        if not taken:
            return None
        row = session.get(WebhookDelivery, delivery_id)
        owner = session.get(User, row.owner_id) if row is not None else None
        if row is None or owner is None:
            return None
        if not owner.webhook_secret:  # recorded before the person had one: make it now
            owner.webhook_secret = new_secret()
        return Attempt(row.id, row.webhook_id, row.url, row.body, owner.webhook_secret)


def send(attempt: Attempt, settings: Settings) -> Answer:
    """POST the webhook once; never raises."""
    try:
        refusal = delivery_refusal(attempt.url, allow_private=settings.webhooks_allow_private)
    except OSError as exc:  # the host name does not resolve (now): try again later
        return Answer(None, f"could not resolve the host: {exc}")
    if refusal is not None:
        return Answer(None, refusal, give_up=True)
    headers = signed_headers(attempt.secret, attempt.webhook_id, attempt.body)
    try:
        response = httpx.post(
            attempt.url,
            content=attempt.body.encode(),
            headers=headers,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,  # a redirect could lead anywhere, private addresses too
        )
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS])
    if 200 <= response.status_code < 300:
        return Answer(response.status_code, None)
    return Answer(response.status_code, f"the receiver answered {response.status_code}")


def record(attempt: Attempt, answer: Answer, settings: Settings) -> DeliveryState | None:
    """Write one attempt's outcome: delivered, due again after a delay, or given up."""
    now = utcnow()
    with session_scope() as session:
        row = session.get(WebhookDelivery, attempt.delivery_id, with_for_update=True)
        if row is None or row.state != DeliveryState.pending:
            return row.state if row is not None else None  # delivered by another attempt
        row.attempts += 1
        row.last_status, row.last_error = answer.status, answer.error
        if answer.ok:
            row.state, row.delivered_at, row.next_attempt_at = DeliveryState.delivered, now, None
        elif answer.give_up or row.attempts >= settings.webhook_max_attempts:
            row.state, row.next_attempt_at = DeliveryState.failed, None
            log.warning("webhook %s given up after %d attempts: %s", row.id, row.attempts,
                        answer.error)  # fmt: skip
        else:
            delay = retry_delay_s(row.attempts, settings)
            row.next_attempt_at = now + timedelta(seconds=delay)
        return row.state


def deliver(delivery_id: uuid.UUID) -> DeliveryState | None:
    """One attempt at one delivery if it is due; its state afterwards (None: not ours now)."""
    settings = get_settings()
    attempt = claim(delivery_id)
    if attempt is None:
        return None
    return record(attempt, send(attempt, settings), settings)


def deliver_due(stopped: threading.Event | None = None) -> int:
    """One pass over every due delivery (until `stopped` is set); how many attempts were
    made."""
    made = 0
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="webhook") as pool:
        while not (stopped and stopped.is_set()) and (ids := due()):
            outcomes = list(pool.map(deliver, ids))
            attempted = sum(outcome is not None for outcome in outcomes)
            made += attempted
            if not attempted:  # every one was taken by another dispatcher meanwhile
                break
    return made


class Dispatcher(threading.Thread):
    """Delivers due webhooks every `webhook_poll_s`, or at once when woken."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="webhook-dispatcher")
        self.stopped = threading.Event()
        self.woken = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.woken.clear()
            try:
                deliver_due(self.stopped)
            except Exception:
                log.warning("webhook pass failed; will try again", exc_info=True)
            self.woken.wait(get_settings().webhook_poll_s)

    def wake(self) -> None:
        self.woken.set()

    def stop(self) -> None:
        self.stopped.set()
        self.woken.set()


_dispatcher: Dispatcher | None = None
_lock = threading.Lock()


def start_dispatcher() -> Dispatcher:
    """Start this process's dispatcher thread (once)."""
    global _dispatcher
    with _lock:
        if _dispatcher is None or not _dispatcher.is_alive():
            _dispatcher = Dispatcher()
            _dispatcher.start()
        return _dispatcher


def stop_dispatcher(timeout_s: float = 10.0) -> None:
    global _dispatcher
    with _lock:
        dispatcher, _dispatcher = _dispatcher, None
    if dispatcher is not None:
        dispatcher.stop()
        dispatcher.join(timeout_s)


def wake() -> None:
    """Deliver now what just became due (after a commit), if this process dispatches."""
    dispatcher = _dispatcher
    if dispatcher is not None:
        dispatcher.wake()
