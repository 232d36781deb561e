"""Data migrations, run backwards and forwards on rows the earlier code wrote."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_requires_become_name_version_and_pypi_names_their_pep_503_form():
    """Rows written before 0013 named dependencies only, and spelled some PyPI names two
    ways; afterwards each names the version its file holds, and one name has one spelling."""
    executor = MigrationExecutor(connection)
    before, after = [("scanning", "0012_dependencypackage_requires")], [("scanning", "0013_requires_name_version")]
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Reference = apps.get_model("integrations", "Reference")
    DependencyPackage = apps.get_model("scanning", "DependencyPackage")
    from tests.factories import ReferenceFactory

    reference = Reference.objects.get(pk=ReferenceFactory().pk)
    rows = [
        ("poetry.lock", "pypi", "flask_cors", "4.0.0", ["Flask", "six"]),
        ("poetry.lock", "pypi", "flask", "3.0.0", []),
        ("Cargo.lock", "cargo", "serde", "1.0.1", ["syn 2.0.1", "gone"]),
        ("Cargo.lock", "cargo", "syn", "2.0.1", []),
    ]
    for path, ecosystem, name, version, requires in rows:
        DependencyPackage.objects.create(
            reference=reference, manifest_path=path, ecosystem=ecosystem, name=name, version=version, requires=requires
        )
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    from scanning.models import DependencyPackage as Current

    found = {p.name: p.requires for p in Current.objects.filter(reference_id=reference.pk)}
    assert found == {
        "flask-cors": ["flask 3.0.0"],  # six is not in the file: no edge to place
        "flask": [],
        "serde": ["syn 2.0.1"],
        "syn": [],
    }
