from django.apps import AppConfig


class ConfigAppConfig(AppConfig):
    """Holds project-wide system checks (nothing else lives here)."""

    name = "config"
    label = "portal_config"
    verbose_name = "Portal configuration"

    def ready(self) -> None:
        from config import checks  # noqa: F401, PLC0415 - registers the checks; models must be ready first
