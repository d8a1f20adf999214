from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import TOYWORLD_MODEL, Settings


def test_embedded_defaults_need_no_services(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.embedded
    assert settings.broker_url == "memory://"
    assert settings.sqlalchemy_url == f"sqlite:///{(tmp_path / 'studio.db').resolve()}"
    assert settings.base_model == str(TOYWORLD_MODEL)


def test_embedded_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).secret()
    second = Settings(data_dir=tmp_path).secret()
    assert first == second and len(first) >= 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ValidationError, match="STUDIO_SECRET_KEY"):
        Settings(env="production", database_url="postgresql://x/y", redis_url="redis://z")


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_PORT", "9123")
    monkeypatch.setenv("STUDIO_BASE_MODEL", "runwayml/stable-diffusion-v1-5")
    settings = Settings()
    assert settings.port == 9123
    assert settings.base_model == "runwayml/stable-diffusion-v1-5"


PRODUCTION = {"env": "production", "database_url": "postgresql://x/y", "redis_url": "redis://z"}


def test_web_processes_one_per_core_in_production_one_embedded(tmp_path: Path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert Settings(data_dir=tmp_path).web_processes == 1
    assert Settings(secret_key="s", **PRODUCTION).web_processes == cores
    assert Settings(secret_key="s", web_workers=3, **PRODUCTION).web_processes == 3
    # Embedded: the worker, the SQLite writer and the read cache's version are in-process.
    with pytest.raises(ValidationError, match="one web process"):
        Settings(data_dir=tmp_path, web_workers=2)


def test_serve_passes_the_web_processes_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from app import cli
    from app.config import get_settings

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    for name, value in {**PRODUCTION, "secret_key": "s", "web_workers": "4"}.items():
        monkeypatch.setenv(f"STUDIO_{name.upper()}", value)
    get_settings.cache_clear()
    try:
        assert cli.main(["serve"]) == 0
    finally:
        get_settings.cache_clear()
    assert seen["workers"] == 4 and seen["factory"] is True
