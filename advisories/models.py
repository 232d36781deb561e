"""The portal's own copy of the OSV database, for the ecosystems it sees: advisories and
the packages (and version ranges) they affect. Nothing about the inventory is sent out:
archives are downloaded and matched here."""

from __future__ import annotations

from django.db import models


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    UNKNOWN = "unknown", "Unknown"


SEVERITY_RANK = {Severity.CRITICAL: 4, Severity.HIGH: 3, Severity.MEDIUM: 2, Severity.LOW: 1, Severity.UNKNOWN: 0}


class OsvFeed(models.Model):
    """One ecosystem's archive: where it comes from and how fresh the copy is."""

    ecosystem = models.CharField(max_length=16, unique=True, help_text="The portal's ecosystem name (npm, pypi, ...).")
    url = models.URLField(max_length=500)
    etag = models.CharField(max_length=255, blank=True)
    last_modified = models.CharField(max_length=64, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    imported_at = models.DateTimeField(null=True, blank=True)
    advisories = models.PositiveIntegerField(default=0)
    git_ranges_ignored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the last refresh failed (the previous copy is kept).")

    def __str__(self) -> str:
        return f"OSV {self.ecosystem}"


class Advisory(models.Model):
    osv_id = models.CharField(max_length=64, unique=True)
    ecosystem = models.CharField(max_length=16, db_index=True)
    aliases = models.JSONField(default=list, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.UNKNOWN)
    score = models.FloatField(null=True, blank=True, help_text="CVSS base score, when the advisory has a vector.")
    modified = models.DateTimeField(null=True, blank=True)
    withdrawn = models.DateTimeField(null=True, blank=True)
    url = models.URLField(max_length=500, blank=True)

    class Meta:
        verbose_name_plural = "advisories"

    def __str__(self) -> str:
        return self.osv_id


class AffectedPackage(models.Model):
    """A package an advisory affects: OSV ``ranges`` (ECOSYSTEM and SEMVER events) and
    explicit ``versions``, compared by the ecosystem's rules (common/packages.py)."""

    advisory = models.ForeignKey(Advisory, on_delete=models.CASCADE, related_name="affected")
    ecosystem = models.CharField(max_length=16)
    name = models.CharField(max_length=255, help_text="Normalised by the ecosystem's rules.")
    ranges = models.JSONField(default=list, blank=True, help_text="[[introduced, fixed, last_affected, limit], ...]")
    versions = models.JSONField(default=list, blank=True)
    fixed = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["ecosystem", "name"])]
