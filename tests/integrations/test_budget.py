"""The shared request budget: one per Bitbucket account, whatever the integration, worker or
process; learned from Bitbucket's headers; never lets the portal meet a 429."""

from __future__ import annotations

import threading
import uuid

import pytest
import responses
from django.utils import timezone

from integrations.bitbucket import budget as budgets
from integrations.bitbucket import client as bb
from integrations.bitbucket.credentials import Credentials
from integrations.models import AuthMethod, RequestBucket
from tests.helpers import SANDBOX_API_TOKEN, SANDBOX_EMAIL

pytestmark = pytest.mark.django_db


def api_token(email: str = SANDBOX_EMAIL, token: str = SANDBOX_API_TOKEN) -> Credentials:
    return Credentials(AuthMethod.API_TOKEN, email, token)


def test_integrations_share_a_budget_when_they_share_the_credential_and_only_then():
    """Keyed by the whole credential: typing someone's email with another token never spends
    (or shows) their budget; Bitbucket's headers bring two tokens of one user in line."""
    api = "https://api.bitbucket.org/2.0"
    assert budgets.account_key(api_token(token="a"), api) == budgets.account_key(api_token(token="a"), api)
    assert budgets.account_key(api_token(token="a"), api) != budgets.account_key(api_token(token="b"), api)
    assert budgets.account_key(api_token(), api) != budgets.account_key(api_token("other@example.com"), api)
    one = Credentials(AuthMethod.ACCESS_TOKEN, "", "token-one")
    two = Credentials(AuthMethod.ACCESS_TOKEN, "", "token-two")
    assert budgets.account_key(one, api) != budgets.account_key(two, api)
    assert "token-one" not in budgets.account_key(one, api)


def test_two_clients_of_one_account_share_its_hour_and_never_meet_a_429(bitbucket):
    bitbucket.sandbox.rate_limit = 5
    first, second = (bb.BitbucketClient(api_token()) for _ in range(2))
    for _ in range(3):
        first.repository("demo/api")
    second.repository("demo/api")
    second.repository("demo/api")
    before = len(bitbucket.sandbox.requests)
    with pytest.raises(budgets.BudgetSpent) as refused:
        second.repository("demo/api")
    assert len(bitbucket.sandbox.requests) == before  # refused before anything was sent
    assert refused.value.retry_after > 0
    assert "5 of 5" in str(refused.value)
    assert not [r for r in bitbucket.sandbox.requests if r.status == 429]
    standing = first.budget.standing(budgets.REST)
    assert (standing.used, standing.left, standing.limit, standing.learned) == (5, 0, 5, True)
    assert standing.resets_at is not None


def test_the_allowance_bitbucket_announces_is_learned(bitbucket, settings):
    bitbucket.sandbox.rate_limit = 10_000  # a scaled access token of a large paid workspace
    client = bb.BitbucketClient(api_token())
    assert client.budget.standing(budgets.REST).limit == settings.BITBUCKET_REST_PER_HOUR
    client.repository("demo/api")
    other = bb.BitbucketClient(api_token())  # another worker learns it from the shared store
    assert other.budget.standing(budgets.REST).as_dict()["limit"] == 10_000
    assert other.budget.standing(budgets.REST).as_dict()["limit_source"] == "bitbucket"


@responses.activate
def test_requests_spent_elsewhere_are_counted_from_bitbucket_headers(settings):
    settings.BITBUCKET_API_URL = api = "https://api.example.test/2.0"
    responses.get(
        f"{api}/repositories/acme/api",
        json={"uuid": "{1}", "slug": "api"},
        headers={"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "100"},
    )
    client = bb.BitbucketClient(api_token())
    client.repository("acme/api")
    # Another tool spent 899 of this user's hour: the portal now believes 900 are gone.
    assert client.budget.standing(budgets.REST).used == 900
    client.reserve = 100
    with pytest.raises(budgets.BudgetSpent):
        client.repository("acme/api")  # background work leaves the reserve alone
    client.reserve = 0
    client.repository("acme/api")


@responses.activate
def test_a_429_fills_the_hour_for_every_worker(settings):
    settings.BITBUCKET_API_URL = api = "https://api.example.test/2.0"
    settings.BITBUCKET_RETRIES = 0
    responses.get(f"{api}/repositories/acme/api", status=429, json={"type": "error", "error": {"message": "slow"}})
    client = bb.BitbucketClient(api_token())
    with pytest.raises(bb.RateLimited):
        client.repository("acme/api")
    with pytest.raises(budgets.BudgetSpent):
        bb.BitbucketClient(api_token()).repository("acme/api")
    assert len(responses.calls) == 1


def test_only_the_rate_limited_resources_are_counted(bitbucket):
    client = bb.BitbucketClient(api_token())
    client.projects_first_page("demo")  # /workspaces/...: a limit Bitbucket does not publish
    client.git_refs("demo", "api")
    assert client.budget.standing(budgets.REST).used == 0
    assert client.budget.standing(budgets.GIT).used == 1


def test_a_batch_pays_once_and_hands_back_what_it_did_not_use():
    budget = budgets.RequestBudget(uuid.uuid4().hex)
    with budget.batch(budgets.GIT, 10) as batch:

        def worker():
            with budget.joined(batch):
                for _ in range(2):
                    budget.take(budgets.GIT)
                budget.spend(budgets.GIT)  # a retry

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert RequestBucket.objects.get(account=budget.account).used == 10  # paid once, threads never asked
        budget.take(budgets.GIT)  # the caller's own request is counted as usual, not from the batch
        assert RequestBucket.objects.get(account=budget.account).used == 11
    assert budget.standing(budgets.GIT).used == 7  # 4 sent + 2 retries by the threads, 1 by the caller


def _concurrent_takes(budget_factory, limit: int, threads: int, each: int) -> int:
    granted, lock = [0], threading.Lock()

    def worker():
        budget = budget_factory()
        for _ in range(each):
            try:
                budget.take(budgets.REST)
            except budgets.BudgetSpent:
                continue
            with lock:
                granted[0] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return granted[0]


def test_the_redis_store_is_shared_and_exact_under_concurrency(settings):
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("needs Redis on 127.0.0.1:6379 (the production store of the budget)")
    settings.REDIS_URL, settings.REQUEST_BUDGET_STORE = url, "redis"
    settings.BITBUCKET_REST_PER_HOUR = 50
    account = uuid.uuid4().hex
    granted = _concurrent_takes(lambda: budgets.RequestBudget(account), limit=50, threads=8, each=20)
    assert granted == 50
    assert budgets.RequestBudget(account).standing(budgets.REST).left == 0
    assert not RequestBucket.objects.exists()  # counted in Redis, not the database


@responses.activate
def test_a_429_with_retry_after_blocks_the_account_only_that_long(settings):
    settings.BITBUCKET_API_URL = api = "https://api.example.test/2.0"
    settings.BITBUCKET_RETRIES = 0
    responses.get(
        f"{api}/repositories/acme/api",
        status=429,
        headers={"Retry-After": "120"},
        json={"type": "error", "error": {"message": "slow"}},
    )
    with pytest.raises(bb.RateLimited):
        bb.BitbucketClient(api_token()).repository("acme/api")
    client = bb.BitbucketClient(api_token())
    with pytest.raises(budgets.BudgetSpent) as refused:
        client.repository("acme/api")
    assert refused.value.retry_after <= 120 + 60  # not the whole hour
    standing = client.budget.standing(budgets.REST)
    assert standing.left == 0
    assert (standing.resets_at - timezone.now()).total_seconds() <= 180
