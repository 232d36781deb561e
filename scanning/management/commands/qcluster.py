"""``manage.py qcluster``: django-q2's task cluster, started the portal's way.

Before the cluster starts, the recurring schedules are made to match the settings
(``SCAN_DISPATCH_MINUTES`` takes effect on restart); once it runs, SIGTERM stops it
within seconds, each running scan recording where it stopped (``scanning/shutdown.py``).
This command replaces django-q2's own (``scanning`` is listed before ``django_q``).
"""

from __future__ import annotations

import os

from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from scanning.schedules import schedules_ensure
from scanning.shutdown import install_main_handler


class Command(DjangoQClusterCommand):
    help = "Start the task cluster (schedules follow the settings; SIGTERM stops it within seconds)."

    def handle(self, *args, **options):
        changed = schedules_ensure()
        if changed:
            self.stderr.write(f"Schedules updated from the settings: {', '.join(changed)}")
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = Cluster()
        cluster.start()
        # Cluster() installed django-q2's own handlers; ours replace them (see shutdown.py).
        install_main_handler()
        if options.get("run_once"):
            cluster.stop()
