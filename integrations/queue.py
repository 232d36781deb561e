"""Putting work on the task queue: the one way, for every app.

Callers enqueue by dotted path (so ``integrations`` never imports the apps whose tasks
it starts) and, inside a transaction, from ``transaction.on_commit`` so a task never
runs before the rows it needs are visible.
"""

from __future__ import annotations

from typing import Any

from django_q.tasks import async_task


def enqueue(func: str, *args: Any) -> None:
    async_task(func, *args, task_name=f"{func.rsplit('.', 1)[-1]}:{':'.join(map(str, args))}")
