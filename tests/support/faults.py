"""Services a test may break: a private PostgreSQL cluster, a private Redis, a small tmpfs.

The machine's shared PostgreSQL (5432) and Redis (6379) are never touched: each of these is
started on a free loopback port inside the test, stopped and started again at will, and
removed afterwards. Missing binaries or privileges fail under REQUIRE_SERVICES=1 (CI) like
the shared services do (tests/support/services.py), saying what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import missing
from tests.support.stack import free_port, wait_for

DISK_FILLER = "filler.bin"


def _postgres_bin(name: str) -> str:
    """The newest Debian PostgreSQL's `name` (initdb, pg_ctl), else the one on PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    found = shutil.which(name)
    if found is None:
        missing(f"PostgreSQL's {name}", "apt-get install postgresql (scripts/ensure-services.sh)")
    assert found is not None
    return found


def _run_as() -> str | None:
    """initdb refuses root: run the cluster as the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        missing("a `postgres` system user (initdb refuses root)", "apt-get install postgresql")
    return "postgres"


def _chown_to(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


@dataclass
class PrivatePostgres:
    """One PostgreSQL cluster on 127.0.0.1:port, owned by this test; `stop()`/`start()`."""

    root: Path
    port: int
    user: str | None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "postgres.log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout_s: float = 60) -> None:
        subprocess.run(
            [_postgres_bin("pg_ctl"), "-D", str(self.data), *args],
            user=self.user,
            check=True,
            timeout=timeout_s,
            stdout=subprocess.DEVNULL,
        )

    def init(self) -> None:
        subprocess.run(
            [
                _postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            user=self.user,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200 -c shared_buffers=32MB"
        )
        self._pg_ctl("-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, as when a server restarts."""
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="studio-pg-"))
    _chown_to(root, user)
    cluster = PrivatePostgres(root, free_port(), user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.running():
                cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A redis-server on 127.0.0.1:port that keeps nothing on disk: a restart loses all data."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server", "apt-get install redis-server (scripts/ensure-services.sh)")
        assert binary is not None
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 30, f"redis-server did not start:\n{self.log.read_text(errors='replace')}")
        client.close()

    def stop(self) -> None:
        """SIGKILL: what a crash does; this Redis keeps nothing, so its data is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def private_redis(log_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), log_dir / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SmallDisk:
    """A tmpfs of a few MiB; `fill()` leaves it with no free space, `free()` undoes that."""

    path: Path

    def fill(self) -> None:
        """Write a filler file until the disk refuses another byte (unbuffered writes)."""
        fd = os.open(self.path / DISK_FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = 1024 * 1024
            while size >= 1:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    size //= 2
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.path / DISK_FILLER).unlink(missing_ok=True)

    def available(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


@contextmanager
def small_disk(size_mib: int, owner: str | None) -> Iterator[SmallDisk]:
    """Mount a tmpfs (needs root or CAP_SYS_ADMIN, as on the CI machine)."""
    mount_point = Path(tempfile.mkdtemp(prefix="studio-disk-"))
    options = f"size={size_mib}m,mode=0700"
    if owner is not None:
        import pwd

        entry = pwd.getpwnam(owner)
        options += f",uid={entry.pw_uid},gid={entry.pw_gid}"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        mount_point.rmdir()
        missing(
            f"a small tmpfs to fill ({result.stderr.strip() or result.returncode})",
            "run the tests as root or with CAP_SYS_ADMIN (as CI does)",
        )
    try:
        yield SmallDisk(mount_point)
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        shutil.rmtree(mount_point, ignore_errors=True)
