from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Commands for development, demos and benchmarks: the Bitbucket sandbox (``bitbucket_sandbox``,
    ``sandbox_demo``, ``bench_sandbox``) and the sync and webhook benchmarks (``bench_sync``,
    ``bench_webhooks``).

    Installed only with ``DEBUG`` or ``PORTAL_DEV_TOOLS=true`` (``config/settings.py``) and left
    out of the production wheel, so a production install has neither these commands nor the
    sandbox they start. It may import the product apps; they never import it.
    """

    name = "devtools"
    verbose_name = "Development tools"
