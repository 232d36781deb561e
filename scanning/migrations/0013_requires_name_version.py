"""Rows written before lock files' graphs named versions: each ``requires`` entry becomes
``name version`` (the one version its file holds), and PyPI names take their PEP 503 form
(``Flask_Cors`` and ``flask_cors`` are both ``flask-cors``), as the parsers now write them.
Read one reference at a time, so the migration's memory does not grow with the inventory."""

import re

from django.db import migrations, models

PEP503 = re.compile(r"[-_.]+")


def key(ecosystem, name):
    if ecosystem == "pypi":
        return PEP503.sub("-", name).lower()
    return name.lower() if ecosystem in ("npm", "composer", "nuget", "cargo") else name


def forwards(apps, schema_editor):
    DependencyPackage = apps.get_model("scanning", "DependencyPackage")
    references = DependencyPackage.objects.values_list("reference_id", flat=True).distinct().order_by()
    for reference_id in references.iterator():
        rows = list(DependencyPackage.objects.filter(reference_id=reference_id))
        taken = {(r.manifest_path, r.ecosystem, r.name, r.version) for r in rows}
        files = {}
        for row in rows:
            files.setdefault(row.manifest_path, []).append(row)
        changed = []
        for file_rows in files.values():
            versions = {}
            for row in file_rows:
                versions.setdefault((row.ecosystem, key(row.ecosystem, row.name)), set()).add(row.version)
            for row in file_rows:
                update = False
                if row.ecosystem == "pypi" and key("pypi", row.name) != row.name:
                    wanted = (row.manifest_path, row.ecosystem, key("pypi", row.name), row.version)
                    if wanted not in taken:
                        taken.discard((row.manifest_path, row.ecosystem, row.name, row.version))
                        taken.add(wanted)
                        row.name, update = wanted[2], True
                edges = []
                for entry in row.requires or []:
                    name, _, version = str(entry).partition(" ")
                    held = versions.get((row.ecosystem, key(row.ecosystem, name)), set())
                    if version and version in held:
                        edges.append(f"{key(row.ecosystem, name)} {version}" if row.ecosystem == "pypi" else entry)
                    elif not version and len(held) == 1:
                        edges.append(f"{key(row.ecosystem, name) if row.ecosystem == 'pypi' else name} {next(iter(held))}")
                if sorted(edges) != list(row.requires or []):
                    row.requires, update = sorted(edges), True
                if update:
                    changed.append(row)
        DependencyPackage.objects.bulk_update(changed, ["name", "requires"], batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [("scanning", "0012_dependencypackage_requires")]

    operations = [
        migrations.AlterField(
            model_name="dependencypackage",
            name="requires",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text='The packages it depends on ("name version"), where its lock file says so.',
            ),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
