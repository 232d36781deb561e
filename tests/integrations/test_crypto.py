import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from integrations.crypto import DecryptionError, KeyRingError, SealedSecret, key_id, key_ring, seal
from integrations.models import Integration
from integrations.selectors import integration_get_credentials, secrets_under_old_keys
from tests.factories import make_integration

TOKEN = "ATCTT3xSuperSecretToken123456"


def _raw(integration_id, column="credentials"):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM integrations_integration WHERE id = %s", [integration_id])
        return cursor.fetchone()[0]


def test_round_trip_and_sealed_value_hides_plaintext(db):
    integration = make_integration(credentials={"token": TOKEN})
    loaded = Integration.objects.get(pk=integration.pk)
    assert isinstance(loaded.credentials, SealedSecret)
    assert TOKEN not in repr(loaded.credentials)
    assert TOKEN not in str(loaded.credentials)
    assert integration_get_credentials(integration=loaded).secret == TOKEN


def test_no_plaintext_in_the_database(db):
    integration = make_integration(credentials={"token": TOKEN})
    raw = _raw(integration.pk)
    assert TOKEN not in raw
    assert raw.startswith(key_ring().prefix)
    webhook_raw = _raw(integration.pk, "webhook_secret")
    assert webhook_raw.startswith(key_ring().prefix)


def test_changing_secret_key_does_not_break_decryption(db, settings):
    integration = make_integration(credentials={"token": TOKEN})
    settings.SECRET_KEY = "a-completely-different-secret-key-" + "x" * 30
    loaded = Integration.objects.get(pk=integration.pk)
    assert integration_get_credentials(integration=loaded).secret == TOKEN


def test_missing_key_fails_closed_with_a_clear_error(db, settings):
    integration = make_integration(credentials={"token": TOKEN})
    old_id = key_id(settings.FIELD_ENCRYPTION_KEYS[0])
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    loaded = Integration.objects.get(pk=integration.pk)
    with pytest.raises(DecryptionError) as excinfo:
        loaded.credentials.reveal()
    assert old_id in str(excinfo.value)
    assert TOKEN not in str(excinfo.value)


def test_tampered_ciphertext_fails_closed(db):
    sealed = seal("value")
    tampered = SealedSecret(sealed.ciphertext[:-4] + "AAAA")
    with pytest.raises(DecryptionError, match="integrity"):
        tampered.reveal()
    with pytest.raises(DecryptionError):
        SealedSecret("not-encrypted-at-all").reveal()


def test_empty_or_invalid_key_ring_is_a_configuration_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(KeyRingError, match="empty"):
        key_ring()
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(KeyRingError) as excinfo:
        key_ring()
    assert "not-a-key" not in str(excinfo.value)


def test_old_keys_still_decrypt_and_rotation_moves_everything_to_the_newest(db, settings):
    old, new = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    integrations = [make_integration(credentials={"token": f"{TOKEN}{i}"}) for i in range(5)]
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    # Old ciphertext still reads under the new ring.
    for i, integration in enumerate(integrations):
        assert (
            integration_get_credentials(integration=Integration.objects.get(pk=integration.pk)).secret == f"{TOKEN}{i}"
        )
    assert secrets_under_old_keys()["integrations.Integration.credentials"] == 5
    with pytest.raises(CommandError):
        call_command("rotate_encryption_keys", "--check")
    call_command("rotate_encryption_keys", "--batch-size", "2")
    assert sum(secrets_under_old_keys().values()) == 0
    call_command("rotate_encryption_keys", "--check")  # exits 0 now
    # Drop the old key entirely: everything still decrypts.
    settings.FIELD_ENCRYPTION_KEYS = [new]
    for i, integration in enumerate(integrations):
        loaded = Integration.objects.get(pk=integration.pk)
        assert integration_get_credentials(integration=loaded).secret == f"{TOKEN}{i}"
        assert loaded.credentials.key_id == key_id(new)


def test_rotation_with_an_unknown_key_changes_nothing(db, settings):
    integration = make_integration(credentials={"token": TOKEN})
    before = _raw(integration.pk)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="not in FIELD_ENCRYPTION_KEYS"):
        call_command("rotate_encryption_keys")
    assert _raw(integration.pk) == before
