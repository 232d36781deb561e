import pytest

from tests.factories import TenantFactory, UserFactory


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
    from scanning.sandbox import generate

    return generate(seed=7, workspaces=1, projects=3, repos=12, branches=3)


@pytest.fixture
def sandbox(sandbox_world):
    """A sandbox on a free loopback port. Every REST response it gives during the test
    is checked against the OpenAPI spec at teardown (when ../shared is present)."""
    from scanning.sandbox import SandboxServer

    server = SandboxServer(sandbox_world).start()
    seen: list = []
    original = server.sandbox.handle

    def recording(request):
        response = original(request)
        if request.path.startswith("/2.0/") and not response.drop:
            seen.append((request.method, request.path[len("/2.0"):], response.status, response.body,
                         response.headers.get("Content-Type", ""), bool(request.arg("fields"))))
        return response

    server.sandbox.handle = recording
    yield server
    server.stop()
    if not contract.spec_available():
        warnings.warn(contract.ABSENT_REASON)
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
