"""Measuring a scan from the inside: rows written, peak memory. Used by bench_sync and tests."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from integrations import services
from integrations.models import Integration

INVENTORY_TABLES = ("integrations_namespace", "integrations_project", "integrations_reference", "integrations_member")
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_INSERT_COLUMNS = re.compile(r"^\s*INSERT INTO \S+ \(([^)]*)\)", re.IGNORECASE)


class WriteCounter:
    """An execute wrapper that counts rows written (INSERT/UPDATE/DELETE) to some tables."""

    def __init__(self, tables=INVENTORY_TABLES):
        self.tables = tuple(tables)
        self.rows = 0
        self.statements: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if _WRITE.match(sql) and any(f'"{t}"' in sql or f" {t} " in sql for t in self.tables):
            self.rows += self._rows(sql, params, many, context["cursor"])
            self.statements.append(sql[:100])
        return result

    @staticmethod
    def _rows(sql, params, many, cursor) -> int:
        columns = _INSERT_COLUMNS.match(sql)
        if columns and "UNNEST" in sql.upper() and params:
            # PostgreSQL bulk inserts send one array per column (INSERT ... SELECT * FROM
            # UNNEST(...)): the rows are the length of any of them.
            return len(params[0])
        if columns:
            # INSERT ... RETURNING reports no rowcount before its rows are fetched: count the
            # value tuples instead (every one is a row inserted, or updated on conflict).
            width = columns.group(1).count(",") + 1
            sets = params if many else [params]
            return sum(len(p or ()) // width for p in sets)
        return max(cursor.rowcount, 0)


@contextmanager
def counting_writes(tables=INVENTORY_TABLES):
    counter = WriteCounter(tables)
    with connection.execute_wrapper(counter):
        yield counter


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def remove_benchmark_tenant(tenant) -> None:
    """Delete a benchmark's throwaway tenant: its integrations through the real purge
    (which also removes their deliveries, scans and results), then the rest."""
    for integration in Integration.objects.filter(tenant=tenant):
        services.integration_delete_request(integration=integration, actor=None)
        services.integration_purge(integration_id=integration.pk)
    tenant.namespaces.all().delete()
    tenant.delete()
