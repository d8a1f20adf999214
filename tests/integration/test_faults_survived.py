"""Faults survived: the services under a running fit fail, and nothing is lost.

A private PostgreSQL cluster and a private Redis (tests/support/faults.py) are stopped and
started under real `serve` and two `worker` processes; the blob table lives on a small tmpfs
that the disk-full test fills. One stack per module; tests run in file order, each leaving
the services up. Every test prints what it measured (docs/reliability.md quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from websockets.sync.client import connect

from app.concepts.models import CONCEPT_CONTENT_TYPE, Concept, ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.generations.models import Generation
from app.jobs import queue
from app.jobs.broker import TASK_FOR_KIND
from app.jobs.events import StateEvent
from app.jobs.lifecycle import request_cancel
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import FitParams, SamplePolicy
from app.jobs.progress import get_progress_bus
from app.storage.models import Blob
from app.users.models import User
from tests.conftest import reset_caches
from tests.support.factories import make_concept, make_user, session_cookie
from tests.support.faults import (
    PrivatePostgres,
    PrivateRedis,
    SmallDisk,
    private_postgres,
    private_redis,
    small_disk,
)
from tests.support.stack import Process, Stack, production_env, running_stack, wait_for
from tests.support.tiny_model import save_tiny_model
from tests.support.webdata import photo_png

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 10.0
STORE_RETRY_S = 15.0
REQUEST_TIMEOUT_S = 10.0


@dataclass
class Faulty:
    stack: Stack
    postgres: PrivatePostgres
    redis_server: PrivateRedis
    disk: SmallDisk
    broker: Celery
    user_id: uuid.UUID

    def workers(self) -> list[Process]:
        return [p for p in self.stack.processes if p.name != "web" and p.popen.poll() is None]

    def start_worker(self, name: str) -> Process:
        worker = self.stack.start_worker(name)
        wait_for(lambda: " ready." in worker.log(), 180, f"{name} did not start:\n{worker.log()}")
        return worker

    def cookies(self) -> dict[str, str]:
        return session_cookie(self.user_id)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def get(self, path: str, timeout_s: float = REQUEST_TIMEOUT_S) -> httpx.Response:
        return httpx.get(f"{self.stack.base_url}{path}", cookies=self.cookies(), timeout=timeout_s)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    tmp = tmp_path_factory.mktemp("faults")
    settings = save_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    with (
        private_postgres() as postgres,
        small_disk(16, postgres.user) as disk,
        private_redis(tmp) as redis_server,
        pytest.MonkeyPatch.context() as mp,
    ):
        admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE studio"))
        admin.dispose()
        env = production_env(
            postgres.url("studio"),
            redis_server.url,
            STUDIO_DATA_DIR=str(tmp / "var"),
            STUDIO_JOB_STORE_RETRY_S=str(STORE_RETRY_S),
            # One torch thread per worker: a fit leaves the web a core, as GPU workers on their
            # own machines do; fits using both cores made browse timings noise (section 4).
            OMP_NUM_THREADS="1",
            **settings,
        )
        for name, value in env.items():
            if name.startswith("STUDIO_"):
                mp.setenv(name, value)
        reset_caches()
        broker = Celery(broker=redis_server.url)

        def send(job_id: uuid.UUID, kind: JobKind) -> None:
            # The test process's Celery app was configured for the embedded broker at import.
            task, queue_name = TASK_FOR_KIND[kind]
            broker.send_task(task, args=[str(job_id)], queue=queue_name)
            get_progress_bus().publish(str(job_id), StateEvent(state="queued"))

        mp.setattr(queue, "send_job_message", send)
        with running_stack(env, tmp) as stack:
            stack.migrate()
            studio = create_engine(postgres.url("studio"), isolation_level="AUTOCOMMIT")
            with studio.connect() as conn:  # photos, files, checkpoints: on the small disk
                conn.execute(text(f"CREATE TABLESPACE small LOCATION '{disk.path}'"))
                conn.execute(text("ALTER TABLE blobs SET TABLESPACE small"))
            studio.dispose()
            stack.start_web()
            with session_scope() as session:
                user_id = make_user(session).id
            context = Faulty(stack, postgres, redis_server, disk, broker, user_id)
            context.start_worker("w1")
            context.start_worker("w2")
            yield context
        broker.close()
        reset_caches()


def _job(job_id: uuid.UUID) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _wait_finished(job_id: uuid.UUID, timeout_s: float = 180) -> Job:
    wait_for(lambda: _job(job_id).state.finished, timeout_s, f"job {job_id} never finished")
    return _job(job_id)


def _steps(faulty: Faulty, job_id: uuid.UUID) -> list[int]:
    entries = faulty.redis().xrange(f"studio:progress:{job_id}")
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    return [event["step"] for event in events if event["type"] == "step"]


def _wait_step(faulty: Faulty, job_id: uuid.UUID, step: int, timeout_s: float = 120) -> None:
    wait_for(
        lambda: max(_steps(faulty, job_id), default=0) >= step,
        timeout_s,
        f"job {job_id} never reached step {step}",
    )


def _submit_fit(faulty: Faulty, steps: int) -> tuple[uuid.UUID, uuid.UUID]:
    with session_scope() as session:
        user = session.get(User, faulty.user_id)
        assert user is not None
        concept = make_concept(session, user)
        params = FitParams(
            token=concept.token,
            superclass="dog",
            steps=steps,
            seed=0,
            samples=SamplePolicy(steps=get_settings().sample_steps),
        )
        job = queue.create_job(session, params, owner_id=user.id, concept_id=concept.id)
        return concept.id, job.id


def _concept_files(concept_id: uuid.UUID) -> int:
    """Concept-file blobs ever stored for this concept: its file, plus any orphan left over."""
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None
        files = session.scalars(
            select(Blob.id).where(Blob.content_type == CONCEPT_CONTENT_TYPE)
        ).all()
        referenced = set(session.scalars(select(Concept.file_blob_id)).all())
        orphans = [blob_id for blob_id in files if blob_id not in referenced]
        return (1 if concept.file_blob_id in files else 0) + len(orphans)


def _samples(concept_id: uuid.UUID) -> list[int]:
    with session_scope() as session:
        generations = session.scalars(select(Generation).where(Generation.concept_id == concept_id))
        return [len(generation.images) for generation in generations]


def _worker_of(faulty: Faulty, job: Job) -> Process:
    """The worker process running the job (worker_id is host:pid:thread)."""
    assert job.worker_id is not None
    pid = int(job.worker_id.split(":")[1])
    (worker,) = [w for w in faulty.workers() if w.popen.pid == pid]
    return worker


# --- 4. Slow and stalled clients -----------------------------------------------------------

STALLED_SOCKETS = 200
SLOW_UPLOADS = 20
WINDOW = 100  # pages per window, fetched one after another
IDLE_WINDOWS = 3  # before the slow clients, and as many again after them
LOADED_WINDOWS = 5
BASELINE_S = 6.0  # bus reads counted with one socket watching, before the other 199 come
READS_BOUND = 4.0
"""What is asserted is what the server does per progress event, not how long browsing takes:
Redis XREADs per event with 200 stalled sockets watching against one socket watching (with
`app/jobs/tail.SharedReads` bypassed, every socket reads for itself: about 200x). Browse
timings under the
slow clients are printed, not asserted: on this shared 2-core machine the median-window p95
ratio ranged 0.55-1.88x with the server intact and 1.46-3.15x with the shared read bypassed
(nine quiet runs each), so no timing bound tells the two apart without failing now and then."""


def _browse_times(faulty: Faulty, samples: int = WINDOW) -> list[float]:
    """Seconds per browse page, fetched one after another by one signed-in user.

    One untimed request first: a new client's first answer also times its TCP connect (and
    was 0.46-0.81 s on a cold server), which is not browsing under load; with cached pages
    answered in 1-2 ms, that one sample decided a window's p95."""
    seconds = []
    with httpx.Client(base_url=faulty.stack.base_url, cookies=faulty.cookies()) as client:
        assert client.get("/", timeout=REQUEST_TIMEOUT_S).status_code == 200
        for _ in range(samples):
            started = time.monotonic()
            try:
                response = client.get("/", timeout=REQUEST_TIMEOUT_S)
            except httpx.TimeoutException:  # counted as its timeout: the p95 still says it
                seconds.append(REQUEST_TIMEOUT_S)
                continue
            seconds.append(time.monotonic() - started)
            assert response.status_code == 200
    return seconds


def _p95(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=20)[-1]


def _window_p95s(faulty: Faulty, windows: int) -> list[float]:
    """The p95 of each of `windows` back-to-back windows of browse pages."""
    return [_p95(_browse_times(faulty)) for _ in range(windows)]


def _stalled_socket(faulty: Faulty, job_id: uuid.UUID) -> socket.socket:
    """A websocket to the job's progress that never reads (a 4 KiB receive buffer)."""
    port = int(faulty.stack.base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    cookie = "; ".join(f"{k}={v}" for k, v in faulty.cookies().items())
    sock.sendall(
        (
            f"GET /ws/jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: {cookie}\r\n\r\n"
        ).encode()
    )
    return sock


def _slow_upload(faulty: Faulty) -> socket.socket:
    """A concept upload that declares 64 KiB and then sends nothing more by itself."""
    port = int(faulty.stack.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    cookie = "; ".join(f"{k}={v}" for k, v in faulty.cookies().items())
    sock.sendall(
        (
            f"POST /api/concepts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
            "Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 65536\r\n\r\n"
            "--xx\r\n"
        ).encode()
    )
    return sock


def _bus_counts(faulty: Faulty) -> tuple[int, int]:
    """(XREAD calls, XADD calls) the private Redis has served so far."""
    stats = faulty.redis().info("commandstats")
    return tuple(  # type: ignore[return-value]
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("xread", "xadd")
    )


def _reads_per_event(before: tuple[int, int], after: tuple[int, int]) -> float:
    reads, events = after[0] - before[0], after[1] - before[1]
    assert events > 0, "the fit published no progress while it was measured"
    return reads / events


def test_stalled_sockets_and_slow_uploads_do_not_stall_browsing(faulty: Faulty) -> None:
    # A fit runs throughout (events for the sockets to pile up, and the same CPU use in the
    # idle windows); idle is measured before and after the clients, on a shared machine.
    concept_id, job_id = _submit_fit(faulty, steps=2000)
    _wait_step(faulty, job_id, 1)
    idle = _window_p95s(faulty, IDLE_WINDOWS)
    sockets = [_stalled_socket(faulty, job_id)]
    time.sleep(1)  # its replay read done
    start = _bus_counts(faulty)
    time.sleep(BASELINE_S)
    one_socket = _reads_per_event(start, _bus_counts(faulty))
    sockets += [_stalled_socket(faulty, job_id) for _ in range(STALLED_SOCKETS - 1)]
    uploads = [_slow_upload(faulty) for _ in range(SLOW_UPLOADS)]
    stop = threading.Event()

    def trickle() -> None:  # one byte a second on every upload
        while not stop.wait(1.0):
            for upload in uploads:
                with contextlib.suppress(OSError):
                    upload.send(b"a")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(3)  # let the sockets' replay reads finish and their buffers fill
        start = _bus_counts(faulty)
        loaded_times = [_browse_times(faulty) for _ in range(LOADED_WINDOWS)]
        many_sockets = _reads_per_event(start, _bus_counts(faulty))
        api = faulty.get(f"/api/jobs/{job_id}")
        assert api.status_code == 200 and api.json()["state"] == "running"
    finally:
        stop.set()
        trickler.join(timeout=5)
        for sock in [*sockets, *uploads]:
            sock.close()
        time.sleep(2)
        idle += _window_p95s(faulty, IDLE_WINDOWS)
        with session_scope() as session:  # the next tests need this worker
            job = session.get(Job, job_id)
            assert job is not None
            request_cancel(session, job)
        assert _wait_finished(job_id, 60).state == JobState.canceled
    loaded = [_p95(times) for times in loaded_times]
    idle_p95, loaded_p95 = statistics.median(idle), statistics.median(loaded)
    print(
        f"progress bus reads per event: one socket {one_socket:.2f}, {STALLED_SOCKETS} stalled "
        f"sockets {many_sockets:.2f} ({many_sockets / one_socket:.2f}x); browse p95 per window "
        f"of {WINDOW} pages with a fit running: idle {[round(x * 1000, 1) for x in idle]} ms "
        f"(median {idle_p95 * 1000:.1f}), with {STALLED_SOCKETS} stalled websockets and "
        f"{SLOW_UPLOADS} 1-byte/s uploads {[round(x * 1000, 1) for x in loaded]} ms (median "
        f"{loaded_p95 * 1000:.1f}): {loaded_p95 / idle_p95:.2f}x"
    )
    assert many_sockets <= READS_BOUND * one_socket  # one read per event, not one per socket
    timeouts = sum(t >= REQUEST_TIMEOUT_S for times in loaded_times for t in times)
    assert timeouts == 0, f"{timeouts} browse requests timed out beside the slow clients"
    assert concept_id is not None


# --- 1. PostgreSQL restarts mid-fit ------------------------------------------------------


def test_postgres_restart_mid_fit_loses_nothing_and_the_web_says_503(faulty: Faulty) -> None:
    concept_id, job_id = _submit_fit(faulty, steps=40)
    _wait_step(faulty, job_id, 3)
    worker = _worker_of(faulty, _job(job_id))
    steps_before = max(_steps(faulty, job_id))
    faulty.postgres.stop()
    down_at = time.monotonic()
    answers: list[tuple[str, int, float, str]] = []
    while time.monotonic() - down_at < OUTAGE_S:
        for path in (f"/api/jobs/{job_id}", "/", f"/concepts/{concept_id}", "/api/health"):
            started = time.monotonic()
            response = faulty.get(path)  # raises if it hangs past its timeout
            answers.append((path, response.status_code, time.monotonic() - started, response.text))
        time.sleep(0.5)
    steps_during = max(_steps(faulty, job_id))
    faulty.postgres.start()
    up_at = time.monotonic()

    def web_back() -> bool:
        return faulty.get(f"/api/jobs/{job_id}").status_code == 200

    wait_for(web_back, 60, "the web did not recover after the database came back")
    web_recovered_s = time.monotonic() - up_at
    job = _wait_finished(job_id, 180)
    finished_s = time.monotonic() - up_at
    slowest = max(seconds for _, _, seconds, _ in answers)
    print(
        f"postgres down {OUTAGE_S:.0f}s at step {steps_before}; fit went on to step "
        f"{steps_during} meanwhile; {len(answers)} requests answered "
        f"{sorted({code for _, code, _, _ in answers})} in at most {slowest:.2f}s; web back "
        f"{web_recovered_s:.2f}s after the restart, job {job.state.value} {finished_s:.1f}s after"
    )
    for path, code, _, body in answers:
        assert code == 503, (path, code, body[:500])
        assert "Traceback" not in body and "sqlalchemy" not in body.lower()
        if path.startswith("/api/") and path != "/api/health":
            assert "database is not reachable" in json.loads(body)["detail"]
    assert slowest < REQUEST_TIMEOUT_S
    assert job.state == JobState.succeeded, job.error
    assert job.attempts == 1, "the worker that kept the fit in memory stored it"
    assert job.result is not None and job.result["resumed_from_step"] is None
    assert steps_during > steps_before, "the fit went on while the database was down"
    assert _concept_files(concept_id) == 1
    assert _samples(concept_id) == [2]
    assert "database" in worker.log()  # it noticed, and said so in words


# --- 2. Redis restarts mid-fit (its data lost) -------------------------------------------


def test_redis_restart_mid_fit_requeues_what_the_broker_lost(faulty: Faulty) -> None:
    # Both workers busy, a third fit queued behind them: its only message is in Redis.
    running = [_submit_fit(faulty, steps=30) for _ in range(2)]
    for _, job_id in running:
        _wait_step(faulty, job_id, 2)
    queued_concept, queued_job = _submit_fit(faulty, steps=6)
    assert _job(queued_job).state == JobState.queued
    watched = running[0][1]
    ws_url = faulty.stack.base_url.replace("http", "ws", 1) + f"/ws/jobs/{watched}"
    cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in faulty.cookies().items())}
    received: list[dict[str, Any]] = []
    reconnects = 0
    sockets = contextlib.ExitStack()
    ws = sockets.enter_context(connect(ws_url, additional_headers=cookie))
    try:
        cursor = json.loads(ws.recv(timeout=60))["id"]
        faulty.redis_server.stop()  # SIGKILL; it saves nothing: messages and events are gone
        down_at = time.monotonic()
        # The running fits end while Redis is down; their final events cannot be published.
        for _, job_id in running:
            _wait_finished(job_id, 120)
        ended_s = time.monotonic() - down_at
        # The page's socket, as progress.js does: read on; when dropped, reconnect after the
        # last id it saw. Its final state can only come from the job row.
        final: dict[str, Any] | None = None
        deadline = time.monotonic() + 30
        while final is None and time.monotonic() < deadline:
            try:
                message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            except Exception:
                reconnects += 1
                time.sleep(0.5)
                with contextlib.suppress(Exception):  # the server refused: try again
                    ws = sockets.enter_context(
                        connect(f"{ws_url}?after={cursor}", additional_headers=cookie)
                    )
                continue
            cursor = message["id"]
            received.append(message["event"])
            if message["event"].get("type") == "state" and message["event"]["state"] in (
                "succeeded",
                "failed",
                "canceled",
            ):
                final = message["event"]
        final_s = time.monotonic() - down_at
    finally:
        sockets.close()
        if faulty.redis_server.process is None:
            faulty.redis_server.start()
    up_at = time.monotonic()
    queued = _wait_finished(queued_job, 120)
    queued_s = time.monotonic() - up_at
    jobs = [_job(job_id) for _, job_id in running]
    print(
        f"redis killed: the running fits ended {ended_s:.1f}s later with it down; the page "
        f"socket got the final state {final} from the row {final_s:.1f}s after the kill "
        f"({reconnects} reconnects); redis restarted empty after {up_at - down_at:.1f}s; the "
        f"fit queued behind them {queued.state.value} {queued_s:.1f}s after it came back"
    )
    assert final == {"type": "state", "state": "succeeded", "attempt": 1}, received[-5:]
    assert [job.state for job in jobs] == [JobState.succeeded] * 2, [job.error for job in jobs]
    assert [job.attempts for job in jobs] == [1, 1]
    assert queued.state == JobState.succeeded, queued.error
    assert queued_s < 60, "the sweeper re-sent the lost message, not the 10-minute requeue"
    for concept_id, _ in [*running, (queued_concept, queued_job)]:
        assert _concept_files(concept_id) == 1
    assert faulty.get(f"/api/jobs/{watched}").json()["state"] == "succeeded"


# --- 3. The disk fills while a fit stores its checkpoint and result ----------------------


def _photo_and_file(faulty: Faulty, concept_id: uuid.UUID) -> tuple[bytes, bytes]:
    page = faulty.get(f"/api/concepts/{concept_id}")
    assert page.status_code == 200, page.text
    body = page.json()
    photo = faulty.get(body["photos"][0]["url"])
    concept_file = faulty.get(f"/api/concepts/{concept_id}/file")
    assert photo.status_code == 200 and concept_file.status_code == 200
    return photo.content, concept_file.content


def _upload_concept(faulty: Faulty) -> httpx.Response:
    files = [("images", (f"p{i}.png", photo_png(i), "image/png")) for i in range(4)]
    token = f"<mug-{uuid.uuid4().hex[:6]}>"
    data = {"name": "Mug", "token": token, "superclass": "mug", "steps": "4", "seed": "1"}
    return httpx.post(
        f"{faulty.stack.base_url}/api/concepts",
        data=data,
        files=files,
        cookies=faulty.cookies(),
        timeout=REQUEST_TIMEOUT_S,
    )


FILLER_TYPE = "application/x-test-filler"


def _fill_blob_table(faulty: Faulty) -> None:
    """With the disk full, PostgreSQL still fills the free space inside the blob table's
    pages (left by deleted checkpoints): use that up too, down to 256-byte rows."""
    engine = create_engine(faulty.postgres.url("studio"))
    size = 1024 * 1024
    try:
        while size >= 256:
            try:
                with engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO blobs (id, created_at, content_type, size, sha256, data)"
                            " VALUES (:id, now(), :type, :size, :sha, :data)"
                        ),
                        {
                            "id": uuid.uuid4(),
                            "type": FILLER_TYPE,
                            "size": size,
                            "sha": "0" * 64,
                            "data": os.urandom(size),  # random: TOAST cannot compress it
                        },
                    )
            except OperationalError:
                size //= 2
    finally:
        engine.dispose()


def _freeze_blob_table_space(faulty: Faulty) -> None:
    """Reclaim the space of deleted checkpoints now, and let no autovacuum reclaim more
    later: else a fit can store its result in space that reappears after the fill."""
    engine = create_engine(faulty.postgres.url("studio"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text("ALTER TABLE blobs SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)")
        )
        conn.execute(text("VACUUM blobs"))
    engine.dispose()


def _empty_blob_table_filler(faulty: Faulty) -> None:
    engine = create_engine(faulty.postgres.url("studio"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM blobs WHERE content_type = :type"), {"type": FILLER_TYPE})
        conn.execute(text("VACUUM blobs"))
        conn.execute(text("ALTER TABLE blobs RESET (autovacuum_enabled, toast.autovacuum_enabled)"))
    engine.dispose()


def test_a_full_disk_fails_the_fit_readably_and_keeps_everything_before(faulty: Faulty) -> None:
    earlier_concept, earlier_job = _submit_fit(faulty, steps=4)
    assert _wait_finished(earlier_job).state == JobState.succeeded
    before = _photo_and_file(faulty, earlier_concept)
    concept_id, job_id = _submit_fit(faulty, steps=24)
    wait_for(lambda: _job(job_id).checkpoint_blob_id is not None, 120, "no checkpoint saved")
    _freeze_blob_table_space(faulty)
    faulty.disk.fill()
    filled_at = time.monotonic()
    assert faulty.disk.available() == 0
    try:
        _fill_blob_table(faulty)
        browse = [faulty.get("/") for _ in range(5)]
        job = _wait_finished(job_id, 120)
        failed_s = time.monotonic() - filled_at
        during = _photo_and_file(faulty, earlier_concept)
        upload = _upload_concept(faulty)
    finally:
        faulty.disk.free()
        _empty_blob_table_filler(faulty)
    print(
        f"disk filled after a checkpoint: job {job.state.value} {failed_s:.1f}s later "
        f"(store retried {STORE_RETRY_S:.0f}s): {job.error!r}; browse during: "
        f"{[r.status_code for r in browse]}"
    )
    assert [r.status_code for r in browse] == [200] * 5
    assert job.state == JobState.failed
    assert job.error is not None and "storage filled up" in job.error
    assert "Traceback" not in job.error and "SQL" not in job.error
    assert during == before, "the earlier concept's photo and file are intact"
    # New photos are stored where PostgreSQL still has room in its pages, else refused
    # with a clear 503; never a 500.
    assert upload.status_code in (202, 503), upload.text
    if upload.status_code == 503:
        assert "storage is full" in upload.json()["detail"]
    else:  # its fit ran while the disk was free again
        _wait_finished(uuid.UUID(upload.json()["job"]["id"]))
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.status == ConceptStatus.failed
        assert concept.file_blob_id is None
    assert _concept_files(concept_id) == 0
    # Space freed: the next fit stores its result as usual.
    again_concept, again_job = _submit_fit(faulty, steps=4)
    again = _wait_finished(again_job)
    assert again.state == JobState.succeeded, again.error
    assert _concept_files(again_concept) == 1


# --- 5. A worker hangs (SIGSTOP) -----------------------------------------------------------


def test_a_hung_worker_is_replaced_and_stores_nothing_when_it_wakes(faulty: Faulty) -> None:
    concept_id, job_id = _submit_fit(faulty, steps=40)
    wait_for(
        lambda: _job(job_id).checkpoint_blob_id is not None and max(_steps(faulty, job_id)) >= 5,
        120,
        "no checkpoint saved",
    )
    hung = _worker_of(faulty, _job(job_id))
    os.kill(hung.popen.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: _job(job_id).attempts == 2, 60, "nobody took over the hung worker's job")
        taken_s = time.monotonic() - stopped_at
        job = _wait_finished(job_id, 180)
        done_s = time.monotonic() - stopped_at
    finally:
        os.kill(hung.popen.pid, signal.SIGCONT)
    dropped = f"job {job_id} is no longer ours"
    wait_for(lambda: dropped in hung.log(), 60, f"the woken worker did not stop:\n{hung.log()}")
    print(
        f"worker SIGSTOPped: job taken over {taken_s:.1f}s later (stale after 3s), "
        f"{job.state.value} {done_s:.1f}s after the hang, resumed from step "
        f"{job.result and job.result.get('resumed_from_step')}"
    )
    assert job.state == JobState.succeeded, job.error
    assert job.worker_id is not None and str(hung.popen.pid) not in job.worker_id.split(":")[1]
    time.sleep(2)  # what the woken worker would still write, it would have by now
    after = _job(job_id)
    assert (after.state, after.attempts, after.result) == (job.state, job.attempts, job.result)
    assert _concept_files(concept_id) == 1
    assert _samples(concept_id) == [2]
    with session_scope() as session:
        total = session.scalar(select(func.count()).select_from(Generation))
    assert total is not None
