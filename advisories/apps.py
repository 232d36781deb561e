from django.apps import AppConfig


class AdvisoriesConfig(AppConfig):
    name = "advisories"
    verbose_name = "Known vulnerabilities (OSV)"
    default_auto_field = "django.db.models.BigAutoField"
