"""System checks that stop start-up when the deployment is configured unsafely."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility, deploy=False)
def check_task_queue(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """django-q2 defaults are unsafe for long scans; insist on deliberate values.

    See https://django-q2.readthedocs.io/en/master/configure.html#retry
    """
    conf = getattr(settings, "Q_CLUSTER", {})
    errors: list[checks.CheckMessage] = []
    timeout, retry = conf.get("timeout"), conf.get("retry")
    if not isinstance(timeout, int) or timeout <= 0:
        errors.append(
            checks.Error(
                "Q_CLUSTER['timeout'] must be a positive number of seconds.",
                hint="A task without a timeout can hold a worker forever.",
                id="portal.E001",
            )
        )
    if not isinstance(retry, int) or (isinstance(timeout, int) and retry <= timeout):
        errors.append(
            checks.Error(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than 'timeout' ({timeout}).",
                hint="Otherwise a running task is handed to a second worker and runs twice.",
                id="portal.E002",
            )
        )
    attempts = conf.get("max_attempts")
    if not isinstance(attempts, int) or attempts <= 0:
        errors.append(
            checks.Error(
                "Q_CLUSTER['max_attempts'] must be a finite positive number.",
                hint="0 means retry forever, which loops a failing task.",
                id="portal.E003",
            )
        )
    if conf.get("catch_up", True):
        errors.append(
            checks.Error(
                "Q_CLUSTER['catch_up'] must be False.",
                hint="With catch_up on, a cluster that was down fires every missed scan at once.",
                id="portal.E004",
            )
        )
    if not conf.get("ack_failures", False):
        errors.append(
            checks.Error(
                "Q_CLUSTER['ack_failures'] must be True.",
                hint="Unacknowledged failures are redelivered until max_attempts, then lost silently.",
                id="portal.E005",
            )
        )
    runner = getattr(settings, "SCAN_CHUNK_RUNNER_SECONDS", 0)
    if isinstance(timeout, int) and not 0 < runner <= timeout / 2:
        errors.append(
            checks.Error(
                f"SCAN_CHUNK_RUNNER_SECONDS ({runner}) must be positive and at most half of Q_TIMEOUT ({timeout}).",
                hint="A chunk runner hands itself out again after that long; it must end well before the "
                "cluster's timeout kills it mid-chunk.",
                id="portal.E006",
            )
        )
    return errors


@checks.register(checks.Tags.security, deploy=False)
def check_encryption_keys(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Credentials cannot be stored or read without a valid key ring."""
    from integrations.crypto import KeyRingError, key_ring  # noqa: PLC0415 - imports models: only once apps are ready

    try:
        key_ring()
    except KeyRingError as exc:
        return [
            checks.Error(
                str(exc),
                hint=(
                    'Generate a key with: python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())" and set FIELD_ENCRYPTION_KEYS.'
                ),
                id="portal.E010",
            )
        ]
    return []
