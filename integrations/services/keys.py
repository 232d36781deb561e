"""Re-encrypting secrets under the newest key."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from integrations.crypto import SealedSecret, encrypted_fields, key_ring
from integrations.services.audit import Actor, audit

logger = logging.getLogger(__name__)

# --- Encryption keys -----------------------------------------------------------------


def encryption_keys_rotate(*, batch_size: int | None = None, actor: Actor = None) -> dict[str, int]:
    """Re-encrypt every stored secret that is not under the newest key.

    Works in batches of ``batch_size`` rows, one transaction each, so it can be
    interrupted and run again. Fails closed: a secret no configured key can read
    raises ``DecryptionError`` and nothing in that batch changes.
    """
    ring = key_ring()
    batch_size = batch_size or settings.FIELD_ENCRYPTION_ROTATE_BATCH
    rotated: dict[str, int] = {}
    for model, field in encrypted_fields():
        label = f"{model._meta.label}.{field.name}"
        rotated[label] = 0
        stale = (
            model._base_manager.exclude(**{field.name: ""})
            .exclude(**{f"{field.name}__isnull": True})
            .exclude(**{f"{field.name}__startswith": ring.prefix})
            .order_by("pk")
        )
        last_pk = None
        while True:
            with transaction.atomic():
                page = stale.filter(pk__gt=last_pk) if last_pk is not None else stale
                rows = list(page.select_for_update().only("pk", field.attname)[:batch_size])
                if not rows:
                    break
                for row in rows:
                    sealed = getattr(row, field.attname)
                    setattr(row, field.attname, SealedSecret(ring.encrypt(ring.decrypt(sealed.ciphertext))))
                model._base_manager.bulk_update(rows, [field.attname])
                rotated[label] += len(rows)
                last_pk = rows[-1].pk
    if any(rotated.values()):
        logger.info("Re-encrypted secrets under key %s: %s", ring.primary_id, rotated)
        audit(
            actor=actor,
            action="encryption.rotate",
            target=None,
            tenant=None,
            details={"rotated": rotated},
            target_type="crypto.keyring",
            target_id=ring.primary_id,
            target_repr=f"key {ring.primary_id}",
        )
    return rotated
