import pytest
from django.core.exceptions import ValidationError

from integrations.bitbucket.credentials import APP_PASSWORD_REMOVED, clean_credentials


def test_each_method_needs_its_fields():
    with pytest.raises(ValidationError) as e:
        clean_credentials("api_token", {})
    assert set(e.value.message_dict) == {"email", "token"}
    with pytest.raises(ValidationError) as e:
        clean_credentials("oauth", {"secret": "s" * 20})
    assert set(e.value.message_dict) == {"key"}
    with pytest.raises(ValidationError) as e:
        clean_credentials("access_token", {"email": "a@b.c"})
    assert set(e.value.message_dict) == {"token"}


def test_app_passwords_are_explained_not_accepted():
    with pytest.raises(ValidationError) as e:
        clean_credentials("api_token", {"email": "dev@example.com", "token": "ATBB" + "x" * 28})
    assert "2026-07-28" in e.value.message_dict["token"][0]
    with pytest.raises(ValidationError) as e:
        clean_credentials("app_password", {})
    assert e.value.message_dict["auth_method"] == [APP_PASSWORD_REMOVED]


def test_bad_email_and_pasted_whitespace():
    with pytest.raises(ValidationError) as e:
        clean_credentials("api_token", {"email": "jdoe", "token": "ATATT3x" + "y" * 20})
    assert "email" in e.value.message_dict
    with pytest.raises(ValidationError) as e:
        clean_credentials("access_token", {"token": "abc def ghi jkl"})
    assert "spaces" in e.value.message_dict["token"][0]


def test_secret_never_appears_in_repr():
    creds = clean_credentials("api_token", {"email": "Dev@Example.com ", "token": "ATATT3xSECRETVALUE"})
    assert creds.identity == "dev@example.com"
    assert "SECRETVALUE" not in repr(creds)
    assert "SECRETVALUE" not in str(creds)
