from django.core.management.base import BaseCommand

from integrations import services
from integrations.models import Integration, IntegrationStatus


class Command(BaseCommand):
    help = (
        "Finish deleting integrations marked 'deleting' (for example after a worker was killed "
        "half-way). Safe to run at any time: it only continues deletions already requested."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=None, help="Rows per transaction.")

    def handle(self, *args, chunk_size: int | None, **options):
        ids = list(Integration.objects.filter(status=IntegrationStatus.DELETING).values_list("pk", flat=True))
        if not ids:
            self.stdout.write("No integrations are waiting to be deleted.")
            return
        for integration_id in ids:
            services.integration_purge(integration_id=integration_id, chunk_size=chunk_size)
            self.stdout.write(f"Purged integration {integration_id}.")
        self.stdout.write(self.style.SUCCESS(f"Finished {len(ids)} deletion(s)."))
