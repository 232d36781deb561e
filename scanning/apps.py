from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_schedules(sender, **kwargs) -> None:
    from scanning.schedules import schedules_ensure  # noqa: PLC0415 - models import only once apps are ready

    schedules_ensure()


class ScanningConfig(AppConfig):
    name = "scanning"
    verbose_name = "Scanning"

    def ready(self) -> None:
        from scanning import shutdown  # noqa: F401, PLC0415 - connects the workers' SIGTERM handling; needs apps ready

        post_migrate.connect(_ensure_schedules, sender=self)
