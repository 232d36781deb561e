from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_schedules(sender, **kwargs) -> None:
    from scanning.schedules import schedules_ensure  # models are ready only after migrate

    schedules_ensure()


class ScanningConfig(AppConfig):
    name = "scanning"
    verbose_name = "Scanning"

    def ready(self) -> None:
        from scanning import shutdown  # noqa: F401 - connects the task workers' SIGTERM handling

        post_migrate.connect(_ensure_schedules, sender=self)
