"""GET /api/health: is every part of the system up?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from app.deps import SessionDep, SettingsDep
from app.health import service

router = APIRouter(tags=["health"])


@router.get("/api/health")
def health(
    session: SessionDep, settings: SettingsDep, response: Response, roundtrip: bool = False
) -> dict[str, Any]:
    """Database, broker and worker status; `roundtrip=true` also runs a ping job end to end."""
    checks: dict[str, Any] = {
        "database": service.check_database(session),
        "broker": service.check_broker(settings),
        "worker": service.check_workers(settings),
    }
    if roundtrip:
        checks["roundtrip"] = service.roundtrip()
    ok = all(check["ok"] for check in checks.values())
    response.status_code = 200 if ok else 503
    return {"ok": ok, "mode": settings.env, "embedded": settings.embedded, **checks}
