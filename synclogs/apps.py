from django.apps import AppConfig


class SynclogsConfig(AppConfig):
    name = "synclogs"
    verbose_name = "Sync logs"
