import pytest
from django.core.exceptions import ValidationError

from integrations.bitbucket.urls import parse_target


@pytest.mark.parametrize(
    "url,workspace,key",
    [
        ("https://bitbucket.org/acme", "acme", ""),
        ("https://bitbucket.org/acme/", "acme", ""),
        ("bitbucket.org/Acme", "acme", ""),
        ("https://bitbucket.org/acme/workspace/projects/PROJ", "acme", "PROJ"),
        ("https://bitbucket.org/acme/workspace/projects/proj_2/", "acme", "PROJ_2"),
    ],
)
def test_accepted_urls(url, workspace, key):
    target = parse_target(url=url)
    assert (target.workspace, target.project_key) == (workspace, key)
    assert target.url.startswith("https://bitbucket.org/acme")


def test_workspace_and_key_given_separately():
    target = parse_target(workspace=" Acme ", project_key="core")
    assert target.url == "https://bitbucket.org/acme/workspace/projects/CORE"
    assert target.scope == "project"


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("https://github.com/acme", "not the Bitbucket Cloud host"),
        ("https://api.bitbucket.org/2.0/repositories/acme", "API host"),
        ("https://bitbucket.example.com/projects/P/repos/r", "Data Center"),
        ("https://bitbucket.org/acme/my-repo", "URL of a repository"),
        ("https://bitbucket.org/", "no workspace"),
        ("https://bitbucket.org/acme?tab=x", "query string"),
        ("https://bitbucket.org/Acme Corp", "not a Bitbucket workspace ID"),
        ("https://bitbucket.org/acme/workspace/projects/9X", "not a Bitbucket project key"),
        ("https://bitbucket.org/acme/workspace/settings", "Unrecognised"),
    ],
)
def test_wrong_urls_get_precise_errors(url, fragment):
    with pytest.raises(ValidationError) as excinfo:
        parse_target(url=url)
    assert fragment in " ".join(excinfo.value.message_dict["bitbucket_url"])


def test_url_and_workspace_together_are_refused():
    with pytest.raises(ValidationError, match="not both"):
        parse_target(url="https://bitbucket.org/acme", workspace="acme")


def test_follows_the_configured_web_url(settings):
    settings.BITBUCKET_WEB_URL = "http://127.0.0.1:8111"
    assert parse_target(url="http://127.0.0.1:8111/demo").workspace == "demo"
    with pytest.raises(ValidationError):
        parse_target(url="https://bitbucket.org/demo")
