"""Database upkeep the application owes the planner."""

from __future__ import annotations

from django.db import connection, models

# Rows written by one operation after which PostgreSQL's statistics are refreshed at once.
BULK_LOAD_ROWS = 5000


def statistics_refresh(*tables: type[models.Model], rows_written: int) -> bool:
    """``ANALYZE`` the tables after a bulk load (PostgreSQL only; a sample, well under a
    second). Until autovacuum gets to them, the planner keeps the statistics of the empty
    tables a fresh installation had, and plans the next scan's look-ups of the rows just
    written as scans of a tiny table: a rescan right after a large first sync would grow
    with the square of the workspace. Returns whether it ran."""
    if connection.vendor != "postgresql" or rows_written < BULK_LOAD_ROWS:
        return False
    with connection.cursor() as cursor:
        for model in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return True


def generic_plans_allow() -> None:
    """Let PostgreSQL reuse generic plans for the rest of the current transaction (``SET
    LOCAL``; a no-op elsewhere). The portal's connections force custom plans
    (``PG_PLAN_CACHE_MODE``) so that a plan cached while tables were empty never outlives
    their growth; a bulk delete of tables that are known to be full runs one foreign-key
    check per deleted row, and re-planning each of them made a purge three times slower."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = auto")
