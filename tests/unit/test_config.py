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
