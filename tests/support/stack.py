"""Start the real processes (`perfusion-studio serve` / `worker`) for integration tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def production_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STUDIO_ENV="production",
        STUDIO_DATABASE_URL=database_url,
        STUDIO_REDIS_URL=redis_url,
        STUDIO_SECRET_KEY=secrets.token_urlsafe(32),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)
    base_url: str = ""

    def spawn(self, name: str, *args: str) -> Process:
        log_path = self.log_dir / f"{name}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen(
            [*CLI, *args], cwd=REPO_ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        proc = Process(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def migrate(self) -> None:
        subprocess.run([*CLI, "migrate"], cwd=REPO_ROOT, env=self.env, check=True)

    def start_web(self) -> Process:
        port = free_port()
        self.env["STUDIO_PORT"] = str(port)
        self.env["STUDIO_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        proc = self.spawn("web", "serve", "--port", str(port))
        self.base_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _responds(self.base_url), 60, f"web did not start:\n{proc.log()}")
        return proc

    def start_worker(self, name: str = "worker") -> Process:
        return self.spawn(name, "worker", f"--hostname={name}-{secrets.token_hex(3)}@%h")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def _responds(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout_s: float, message: str, interval_s: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(message)


@contextmanager
def running_stack(env: dict[str, str], log_dir: Path) -> Iterator[Stack]:
    stack = Stack(env=env, log_dir=log_dir)
    try:
        yield stack
    finally:
        stack.stop()
