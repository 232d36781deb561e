"""API tokens move from DRF's plaintext ``authtoken_token`` table to django-rest-knox,
which stores a SHA-512 digest. Existing tokens keep working (their digest is computed
here) and the plaintext table is dropped, so no database dump holds a usable token."""

from django.db import migrations


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
        token = AuthToken.objects.create(digest=hash_token(key), token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH],
                                         user_id=user_id, expiry=None)
        AuthToken.objects.filter(pk=token.pk).update(created=created)
    schema_editor.execute(schema_editor.sql_delete_table % {"table": schema_editor.quote_name("authtoken_token")})


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0003_hardening"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(move_tokens, migrations.RunPython.noop)]
