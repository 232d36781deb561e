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
