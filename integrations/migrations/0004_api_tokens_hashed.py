"""API tokens move from DRF's plaintext ``authtoken_token`` table to django-rest-knox,
which stores a SHA-512 digest. Existing tokens keep working (their digest is computed
here) and the plaintext table is dropped, so no database dump holds a usable token."""

from datetime import datetime
from datetime import timezone as dt_timezone

from django.db import migrations
from django.utils import timezone


def move_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        digest = hash_token(key)
        AuthToken._default_manager.bulk_create([AuthToken(digest=digest, token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH],
                                                          user_id=user_id, expiry=None)])
        if isinstance(created, datetime) and timezone.is_naive(created):
            created = timezone.make_aware(created, dt_timezone.utc)  # SQLite hands back naive UTC
        if isinstance(created, datetime):
            AuthToken._default_manager.filter(pk=digest).update(created=created)
    schema_editor.execute(schema_editor.sql_delete_table % {"table": schema_editor.quote_name("authtoken_token")})


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0003_hardening"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(move_tokens, migrations.RunPython.noop)]
