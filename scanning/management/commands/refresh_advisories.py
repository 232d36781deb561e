"""``refresh_advisories``: bring the portal's copy of OSV up to date now, and match."""

from django.core.management.base import BaseCommand, CommandError

from common.packages import OSV_ECOSYSTEMS
from scanning.vulnerabilities import advisories_refresh, vulnerabilities_match_all


class Command(BaseCommand):
    help = (
        "Download the OSV archive of each ecosystem the inventory uses (or those named) when it changed, "
        "import it, and match the changed advisories against the inventory. --rematch matches everything again."
    )

    def add_arguments(self, parser):
        parser.add_argument("ecosystems", nargs="*", help=f"Any of: {', '.join(sorted(OSV_ECOSYSTEMS))}.")
        parser.add_argument("--rematch", action="store_true", help="Match every package row again afterwards.")

    def handle(self, *args, ecosystems, rematch, **options):
        unknown = sorted(set(ecosystems) - set(OSV_ECOSYSTEMS))
        if unknown:
            raise CommandError(
                f"Unknown ecosystem(s) {', '.join(unknown)}; known: {', '.join(sorted(OSV_ECOSYSTEMS))}."
            )
        report = advisories_refresh(ecosystems=ecosystems or None)
        failed = False
        for ecosystem, r in report.items():
            if r["error"]:
                failed = True
                self.stderr.write(f"{ecosystem}: {r['error']} (the previous copy is kept)")
            elif not r["changed"]:
                self.stdout.write(f"{ecosystem}: unchanged ({r['advisories'] or 'archive not modified'})")
            else:
                self.stdout.write(
                    f"{ecosystem}: {r['advisories']} advisories ({r['removed']} removed, "
                    f"{r['git_ranges_ignored']} GIT ranges ignored); {r['matched']} matches written"
                )
        if not report:
            self.stdout.write("The inventory has no packages yet: nothing to refresh.")
        if rematch:
            self.stdout.write(f"Matched everything again: {vulnerabilities_match_all()} vulnerable package rows.")
        if failed:
            raise CommandError("Some archives could not be refreshed.")
