"""Encryption of secrets at rest: a Fernet key ring and a model field.

Why not a library: django-cryptography 1.1 does not import on Django 5, and its
Django 5 forks derive their key from ``SECRET_KEY`` and cannot rotate. This module is
a thin layer over ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256):

* keys come from ``settings.FIELD_ENCRYPTION_KEYS`` (newest first), never from
  ``SECRET_KEY``;
* each stored value is ``<key id>$<fernet token>``, where the key id is the first 8
  hex digits of SHA-256 of the key, so "which rows are under an old key" is a plain
  SQL prefix query and an unknown key is named in the error;
* decryption fails closed: a missing key or a tampered value raises
  :class:`DecryptionError`, never returns the stored text;
* a decrypted value only exists where code calls :meth:`SealedSecret.reveal`; the
  model attribute is a :class:`SealedSecret` whose ``str``/``repr`` show no secret.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

SEPARATOR = "$"


class KeyRingError(ImproperlyConfigured):
    """FIELD_ENCRYPTION_KEYS is missing or malformed."""


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


def key_id(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[tuple[str, Fernet], ...]  # (key id, Fernet), newest first

    @property
    def primary_id(self) -> str:
        return self.keys[0][0]

    @property
    def prefix(self) -> str:
        """What every value encrypted under the newest key starts with."""
        return f"{self.primary_id}{SEPARATOR}"

    def encrypt(self, plaintext: str) -> str:
        kid, fernet = self.keys[0]
        return f"{kid}{SEPARATOR}{fernet.encrypt(plaintext.encode()).decode()}"

    def decrypt(self, stored: str) -> str:
        kid, sep, token = stored.partition(SEPARATOR)
        if not sep:
            raise DecryptionError("Stored secret is not in the encrypted format; refusing to use it.")
        for candidate_id, fernet in self.keys:
            if candidate_id == kid:
                try:
                    return fernet.decrypt(token.encode()).decode()
                except InvalidToken as exc:
                    raise DecryptionError(
                        f"Stored secret under key {kid} failed its integrity check (tampered or truncated)."
                    ) from exc
        raise DecryptionError(
            f"Stored secret was encrypted with key {kid}, which is not in "
            "FIELD_ENCRYPTION_KEYS. Add that key back (after the newest) to read it."
        )


@lru_cache(maxsize=8)
def _build_ring(raw_keys: tuple[str, ...]) -> KeyRing:
    if not raw_keys:
        raise KeyRingError("FIELD_ENCRYPTION_KEYS is empty: credentials cannot be encrypted or read.")
    keys = []
    for position, raw in enumerate(raw_keys, start=1):
        try:
            keys.append((key_id(raw), Fernet(raw.encode())))
        except (ValueError, TypeError) as exc:
            # The key itself is never echoed back.
            raise KeyRingError(
                f"FIELD_ENCRYPTION_KEYS entry {position} is not a valid Fernet key (32 url-safe base64-encoded bytes)."
            ) from exc
    return KeyRing(keys=tuple(keys))


def key_ring() -> KeyRing:
    """The key ring for the current settings (re-read, so override_settings works)."""
    raw = tuple(k.strip() for k in settings.FIELD_ENCRYPTION_KEYS if k and k.strip())
    return _build_ring(raw)


class SealedSecret:
    """An encrypted value as loaded from the database.

    Printing, logging or rendering it shows only the key id; call :meth:`reveal`
    at the single place that needs the plaintext (building an auth header).
    """

    __slots__ = ("ciphertext",)

    def __init__(self, ciphertext: str) -> None:
        self.ciphertext = ciphertext

    @property
    def key_id(self) -> str:
        return self.ciphertext.partition(SEPARATOR)[0]

    def reveal(self) -> str:
        return key_ring().decrypt(self.ciphertext)

    def __repr__(self) -> str:
        return f"<SealedSecret key={self.key_id}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SealedSecret) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)


def seal(plaintext: str) -> SealedSecret:
    """Encrypt now, so the model instance never holds the plaintext."""
    return SealedSecret(key_ring().encrypt(plaintext))


def looks_encrypted(value: str) -> bool:
    kid, sep, token = value.partition(SEPARATOR)
    return bool(sep) and len(kid) == 8 and token.startswith("gAAAAA")


class EncryptedTextField(models.TextField):
    """A text column holding ``<key id>$<fernet token>``.

    Assign a plain ``str`` to store a new secret (encrypted on save); reading
    gives a :class:`SealedSecret`. Not editable: forms never show or round-trip it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("editable", False)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if not value:
            return value
        return SealedSecret(value)

    def to_python(self, value: Any) -> Any:
        # Deserialisation (loaddata) hands back stored ciphertext; keep it sealed
        # rather than encrypting it a second time.
        if isinstance(value, str) and looks_encrypted(value):
            return SealedSecret(value)
        return value

    def get_prep_value(self, value: Any) -> Any:
        # Lookups (e.g. a key-id prefix query) compare against stored text as is.
        if isinstance(value, SealedSecret):
            return value.ciphertext
        return super().get_prep_value(value)

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        if isinstance(value, str) and value:
            value = key_ring().encrypt(value)
        return super().get_db_prep_save(value, connection)

    def value_to_string(self, obj: models.Model) -> str:
        value = self.value_from_object(obj)
        return value.ciphertext if isinstance(value, SealedSecret) else ""


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every (model, field) pair that stores an encrypted value."""
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]
