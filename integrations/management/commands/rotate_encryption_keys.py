from django.core.management.base import BaseCommand, CommandError

from integrations import selectors, services
from integrations.crypto import DecryptionError, key_ring


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under the newest key in FIELD_ENCRYPTION_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys. "
        "With --check, only report, and exit 1 while any secret is under an older key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Report only; exit 1 if anything needs rotating.")
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per transaction.")

    def handle(self, *args, check: bool, batch_size: int | None, **options):
        ring = key_ring()
        if check:
            stale = selectors.secrets_under_old_keys()
            for label, count in stale.items():
                self.stdout.write(f"{label}: {count} under an older key")
            total = sum(stale.values())
            if total:
                raise CommandError(
                    f"{total} secret(s) are not under the newest key {ring.primary_id}; run rotate_encryption_keys.",
                    returncode=1,
                )
            self.stdout.write(self.style.SUCCESS(f"All secrets are under the newest key {ring.primary_id}."))
            return
        try:
            rotated = services.encryption_keys_rotate(batch_size=batch_size)
        except DecryptionError as exc:
            raise CommandError(f"{exc} Nothing in the failing batch was changed.") from exc
        for label, count in rotated.items():
            self.stdout.write(f"{label}: re-encrypted {count}")
        self.stdout.write(
            self.style.SUCCESS(f"Done: {sum(rotated.values())} secret(s) now under key {ring.primary_id}.")
        )
