import logging

import pytest

from tests.factories import TenantFactory, UserFactory


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters and lockout windows live in the cache: each test starts clean."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_unexpected_tracebacks(request, caplog):
    """A test fails when anything logged a traceback (``logger.exception``, Django's 500
    log, a thread's crash) that the test did not declare with
    ``@pytest.mark.expected_traceback``: a handled failure must not hide a crash."""
    caplog.set_level(logging.WARNING)
    yield
    if request.node.get_closest_marker("expected_traceback"):
        return
    crashes = [
        r
        for r in caplog.get_records("call") + caplog.get_records("teardown")
        if r.exc_info and r.levelno >= logging.ERROR
    ]
    if crashes:
        lines = [f"{r.name}: {r.getMessage()} ({r.exc_info[0].__name__ if r.exc_info[0] else '?'})" for r in crashes]
        pytest.fail("Unexpected traceback(s) logged:\n" + "\n".join(lines), pytrace=False)


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, superuser):
    client.force_login(superuser)
    return client


# --- The Bitbucket sandbox ----------------------------------------------------------------

import warnings  # noqa: E402

from tests import contract  # noqa: E402


@pytest.fixture
def sandbox_world():
    from bitbucket_sandbox import generate

    return generate(seed=7, workspaces=1, projects=3, repos=12, branches=3)


@pytest.fixture
def sandbox(sandbox_world):
    """A sandbox on a free loopback port. Every REST response it gives during the test
    is checked against the OpenAPI spec at teardown (when ../shared is present)."""
    from bitbucket_sandbox import SandboxServer

    server = SandboxServer(sandbox_world).start()
    seen: list = []
    original = server.sandbox.handle

    def recording(request):
        response = original(request)
        if request.path.startswith("/2.0/") and not response.drop:
            seen.append(
                (
                    request.method,
                    request.path[len("/2.0") :],
                    response.status,
                    response.body,
                    response.headers.get("Content-Type", ""),
                    bool(request.arg("fields")),
                )
            )
        return response

    server.sandbox.handle = recording
    yield server
    server.stop()
    # Every Bitbucket endpoint the portal called is one the sandbox serves (a call to one it
    # does not would pass here as a 404 and fail against Bitbucket, or the other way round).
    assert not server.sandbox.unrouted, f"calls to endpoints the sandbox does not serve: {server.sandbox.unrouted}"
    if not contract.spec_available():
        warnings.warn(contract.ABSENT_REASON, stacklevel=1)
        return
    for method, path, status, body, content_type, partial in seen:
        contract.validate(method, path, status, body, content_type, partial)


@pytest.fixture
def bitbucket(sandbox, settings, db):
    """Point the portal at the sandbox, with quick retries so failure tests stay fast."""
    settings.BITBUCKET_API_URL = sandbox.api_url
    settings.BITBUCKET_WEB_URL = sandbox.web_url
    settings.BITBUCKET_RETRIES = 2
    settings.BITBUCKET_BACKOFF_FACTOR = 0.01
    settings.BITBUCKET_BACKOFF_MAX = 0.05
    settings.BITBUCKET_MAX_RETRY_AFTER = 1
    settings.BITBUCKET_READ_TIMEOUT = 5
    return sandbox


@pytest.fixture
def count_writes():
    """``with count_writes() as w: ...; w.rows`` counts inventory rows written."""
    from scanning.metrics import counting_writes

    return counting_writes
