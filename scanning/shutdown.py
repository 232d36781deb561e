"""Stopping the task cluster within seconds on SIGTERM, losing nothing.

django-q2 alone does not: its sentinel and workers die at once from SIGTERM when the
whole process group gets it (what systemd sends), and the main process then waits
forever in ``Event.set()`` for the dead sentinel; when only the main process gets it,
the sentinel waits for each running task to finish (a scan: up to ``Q_TIMEOUT``). So:

* in each worker (``post_spawn``), SIGTERM raises :class:`WorkerStopping` inside the
  running task, which ends its scan as interrupted and queues the scan that resumes it
  (an idle worker just exits);
* in the main process (``install_main_handler``, from ``manage.py qcluster``), SIGTERM
  is passed to the cluster's processes, the workers get a few seconds to record where
  they stopped, and the process exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from django.dispatch import receiver
from django_q.signals import post_execute_in_worker, post_spawn, pre_execute

GRACE_SECONDS = 8.0


class WorkerStopping(BaseException):
    """The cluster is shutting down: raised inside the running task. A ``BaseException``
    so no ``except Exception`` in the task mistakes it for a failure and carries on."""


_state = {"in_task": False, "stopping": False}


def _worker_sigterm(signum, frame) -> None:
    if _state["stopping"]:
        return
    _state["stopping"] = True
    if not _state["in_task"]:
        os._exit(0)  # idle: nothing to record
    raise WorkerStopping("The task cluster received SIGTERM.")


@receiver(post_spawn)
def _on_worker_start(sender, proc_name, **kwargs) -> None:
    # Only in a cluster's worker process: with ``sync`` (tests, a request running a task
    # inline) the "worker" is the calling process, whose signals are not ours to change.
    if multiprocessing.current_process().name != "MainProcess":
        signal.signal(signal.SIGTERM, _worker_sigterm)


@receiver(pre_execute)
def _on_task_start(sender, func, task, **kwargs) -> None:
    _state["in_task"] = True


@receiver(post_execute_in_worker)
def _on_task_end(sender, func, task, **kwargs) -> None:
    _state["in_task"] = False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def install_main_handler() -> None:
    """In ``qcluster``'s main process: SIGTERM/SIGINT stop the whole cluster promptly."""

    def stop(signum, frame) -> None:
        if _state["stopping"]:
            return
        _state["stopping"] = True
        pids = descendants(os.getpid())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
