from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, upgrade
from app.models import Base


def test_postgres_upgrade_matches_models_and_downgrades_cleanly(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(postgres_url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    engine.dispose()
