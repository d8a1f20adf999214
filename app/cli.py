"""`perfusion-studio`: serve the web app, run a worker, migrate the database."""

from __future__ import annotations

import argparse
import logging
import sys

from app.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    mode = "embedded (SQLite, in-process worker)" if settings.embedded else "production"
    workers = settings.web_processes
    print(
        f"Perfusion Studio [{mode}] on http://{host}:{port}/ ({workers} web processes)", flush=True
    )
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, log_level="info",
        workers=workers,
    )  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.jobs.broker import QUEUES, celery_app

    settings = get_settings()
    if settings.embedded:
        print(
            "STUDIO_REDIS_URL is not set: the embedded default runs its worker inside "
            "`perfusion-studio serve`.",
            file=sys.stderr,
        )
        return 2
    argv = [
        "worker",
        "--pool=solo",  # one job at a time per process: the GPU and the cached model are its own
        f"--queues={args.queues or ','.join(QUEUES)}",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    celery_app.worker_main(argv)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.migrate import downgrade, upgrade

    if args.downgrade:
        downgrade(revision=args.downgrade)
    else:
        upgrade(revision=args.revision)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="perfusion-studio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web app (and, embedded, its worker)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a Celery worker against Redis (production)")
    worker.add_argument("--queues", help="comma-separated; default: all")
    worker.add_argument("--hostname", help="Celery node name, e.g. gpu0@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to head")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead")
    migrate.set_defaults(func=_migrate)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
