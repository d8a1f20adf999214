"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.concepts.examples import EXAMPLES_DIR
from app.concepts.examples import URL_PREFIX as EXAMPLES_URL
from app.concepts.routes import router as concepts_router
from app.config import get_settings
from app.generations.routes import router as generations_router
from app.health.routes import router as health_router
from app.jobs.routes import router as jobs_router
from app.pages.routes import router as pages_router
from app.security.install import install_security
from app.static_assets import STATIC_DIR, VersionedStaticFiles
from app.unavailable import install_database_faults
from app.users.routes import router as users_router
from app.webhooks.routes import router as webhooks_router

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    if settings.embedded:
        # One command, no services: bring the SQLite schema up to date and run a worker here.
        from app.jobs.embedded import start_embedded_worker
        from app.jobs.sweeper import sweep
        from app.migrate import upgrade
        from app.webhooks.delivery import start_dispatcher, stop_dispatcher

        upgrade()
        sweep(orphaned_running=True)  # jobs this process ran before it stopped, or queued
        worker = start_embedded_worker()
        start_dispatcher()  # webhooks due, including retries left by the last run
        log.info("embedded worker started")
        yield
        worker.stop()
        stop_dispatcher()
    else:
        yield


def create_app() -> FastAPI:
    """Build the app for the current settings."""
    app = FastAPI(title="Perfusion Studio", version="0.1.0", lifespan=lifespan)
    install_security(app)
    install_database_faults(app)
    app.mount("/static", VersionedStaticFiles(directory=STATIC_DIR), name="static")
    if EXAMPLES_DIR.is_dir():  # the sample photo sets of the new-concept page
        app.mount(EXAMPLES_URL, StaticFiles(directory=EXAMPLES_DIR), name="examples")
    app.include_router(health_router)
    app.include_router(users_router)
    app.include_router(concepts_router)
    app.include_router(generations_router)
    app.include_router(pages_router)
    app.include_router(jobs_router)
    app.include_router(webhooks_router)
    return app
