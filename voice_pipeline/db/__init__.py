"""PostgreSQL: the embedded server (``DATABASE_URL`` unset), the asyncpg pool, migrations."""

from voice_pipeline.db.errors import DatabaseUnavailable, MigrationError
from voice_pipeline.db.pool import create_pool, healthcheck, resolve_dsn

__all__ = ["DatabaseUnavailable", "MigrationError", "create_pool", "healthcheck", "resolve_dsn"]
