"""Forms for the integration flows, shared by the admin and the portal pages.

Forms only shape input; the services validate the rules and write. A service's
``ValidationError`` is put back on the form with :func:`apply_service_errors`, next
to the field it concerns. Secret fields never render a value back.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError

from common.packages import range_problem
from common.scanners import CATALOGUE
from integrations import services
from integrations.models import AuthMethod, Integration, IntegrationStatus, Namespace

SECRET_WIDGET = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


def apply_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Attach a service's errors to the matching fields; the rest go on top."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


class CredentialsForm(forms.Form):
    auth_method = forms.ChoiceField(
        choices=AuthMethod.choices,
        initial=AuthMethod.ACCESS_TOKEN,
        widget=forms.RadioSelect,
        help_text="App passwords were removed by Atlassian on 2026-07-28 and are not accepted.",
    )
    email = forms.CharField(
        required=False,
        label="Atlassian account email",
        widget=forms.EmailInput(attrs={"autocomplete": "off"}),
        help_text="For an API token: the email of the account that created it.",
    )
    token = forms.CharField(
        required=False,
        label="Token",
        widget=SECRET_WIDGET,
        strip=True,
        help_text="The access token, or the Atlassian API token. It is encrypted and never shown again.",
    )
    key = forms.CharField(
        required=False, label="OAuth consumer key", widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    secret = forms.CharField(required=False, label="OAuth consumer secret", widget=SECRET_WIDGET, strip=True)

    def credentials(self) -> dict[str, str]:
        return {k: self.cleaned_data.get(k, "") for k in ("email", "token", "key", "secret")}

    @staticmethod
    def initial_for(integration: Integration) -> dict[str, str]:
        """The current method and its non-secret half; the secret is never pre-filled."""
        identity = integration.credential_identity
        return {
            "auth_method": integration.auth_method,
            "email": identity if integration.auth_method == AuthMethod.API_TOKEN else "",
            "key": identity if integration.auth_method == AuthMethod.OAUTH else "",
        }


class CredentialsUpdateForm(CredentialsForm):
    """Update Credentials (portal page and admin): the credential fields, and the explicit
    confirmation that saves credentials which failed a required check."""

    confirm_failed = forms.BooleanField(
        required=False,
        label="Save anyway",
        help_text="Save these credentials although a required check failed (scans will fail where they fall short).",
    )

    def save_to(self, integration: Integration, *, actor, credentials: dict | None = None, rescan: bool = False):
        """Verify and save through the service. Returns ``(saved, report, kept)``: the
        verification report to show, and the checked credentials, encrypted, when they were
        refused (for a confirmation without retyping); the reasons are on the form."""
        try:
            report = services.credentials_update(
                integration=integration,
                auth_method=self.cleaned_data["auth_method"],
                credentials=credentials or self.credentials(),
                actor=actor,
                confirmed=self.cleaned_data["confirm_failed"],
                rescan=rescan,
            )
        except services.VerificationFailed as exc:
            self.add_error(
                None,
                "Bitbucket verification failed; nothing was saved. Fix what the checks below name, or tick "
                "'Save anyway' to keep these credentials regardless.",
            )
            return False, exc.report, exc.kept
        except ValidationError as exc:
            apply_service_errors(self, exc)
            return False, None, None
        return True, report, None


def _scanner_choices() -> list[tuple[str, str]]:
    return [(s.name, f"{s.name}: {s.description}") for s in CATALOGUE.values()]


class SettingsFieldsMixin(forms.Form):
    """The editable settings shared by Add and Edit."""

    scanners = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, choices=_scanner_choices)
    scan_interval_hours = forms.IntegerField(
        min_value=1,
        max_value=720,
        initial=24,
        label="Scan interval (hours)",
        help_text="How often the workspace is rescanned (1 to 720 hours).",
    )
    labels = forms.CharField(required=False, help_text="Comma-separated.")
    tracked_branches = forms.CharField(
        required=False,
        label="More branches to track",
        help_text="Besides each repository's main branch: comma-separated glob patterns, e.g. release/*, develop.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    pr_enabled = forms.BooleanField(required=False, label="Scan pull requests")
    pr_target_branches = forms.CharField(
        required=False,
        initial="*",
        label="Target branch patterns",
        help_text="Comma-separated glob patterns, e.g. main, release/*.",
    )
    pr_post_build_status = forms.BooleanField(required=False, initial=True, label="Post a build status")
    pr_post_summary_comment = forms.BooleanField(required=False, label="Post a summary comment")
    pr_status_per_scanner = forms.BooleanField(
        required=False,
        label="One build status per check",
        help_text="Separate statuses for dependencies (denied packages) and lock files, instead of one.",
    )
    pr_deny_packages = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Denied packages",
        help_text="One per line: a package name, then optionally a range (lodash <4.17.21, minimist >=1.0,<1.2.6, "
        "left-pad 1.3.0). No range denies every version. Pull requests that add or move to a denied "
        "version fail.",
    )
    pr_require_lockfile_update = forms.BooleanField(
        required=False, label="Fail when a manifest changes without its lock file"
    )
    pr_vulnerabilities = forms.ChoiceField(
        choices=[
            ("warn", "Warn in the summary"),
            ("fail", "Fail the pull request"),
            ("off", "Do not check"),
        ],
        initial="warn",
        required=False,
        label="Known vulnerabilities a change brings in",
        help_text="Versions a pull request adds or moves to that a known advisory (OSV) affects.",
    )
    pr_vulnerability_min_severity = forms.ChoiceField(
        choices=[("critical", "Critical"), ("high", "High and above"), ("medium", "Medium and above"), ("low", "Any")],
        initial="high",
        required=False,
        label="Minimum severity",
    )

    @staticmethod
    def initial_from(integration: Integration) -> dict:
        pr = integration.pr_config
        return {
            "name": integration.name,
            "scanners": integration.scanners,
            "scan_interval_hours": int(integration.scan_interval.total_seconds() // 3600),
            "labels": ", ".join(integration.labels),
            "tracked_branches": ", ".join(integration.tracked_branches),
            "description": integration.description,
            "status": integration.status,
            "pr_enabled": pr["enabled"],
            "pr_target_branches": ", ".join(pr["target_branches"]),
            "pr_post_build_status": pr["post_build_status"],
            "pr_post_summary_comment": pr["post_summary_comment"],
            "pr_status_per_scanner": pr["status_per_scanner"],
            "pr_deny_packages": "\n".join(
                " ".join(p for p in (d.get("name", ""), d.get("range", "")) if p) for d in pr["deny_packages"]
            ),
            "pr_require_lockfile_update": pr["require_lockfile_update"],
            "pr_vulnerabilities": pr["vulnerabilities"],
            "pr_vulnerability_min_severity": pr["vulnerability_min_severity"],
        }

    def clean_pr_deny_packages(self) -> list[dict[str, str]]:
        denied = []
        for number, line in enumerate(self.cleaned_data["pr_deny_packages"].splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            name, _, text = line.partition(" ")
            if not name or any(c in name for c in "<>=!~^"):
                raise ValidationError(f"Line {number}: start with the package name, then an optional range.")
            problem = range_problem(text)
            if problem:
                raise ValidationError(f"Line {number} ({name}): {problem}")
            denied.append({"name": name, "range": text.strip()})
        return denied

    def settings_values(self) -> dict:
        data = self.cleaned_data
        return {
            "scanners": data["scanners"],
            "scan_interval": timedelta(hours=data["scan_interval_hours"]),
            "labels": [label for label in data["labels"].split(",")],
            "tracked_branches": [p.strip() for p in data["tracked_branches"].split(",") if p.strip()],
            "description": data["description"],
            "pr_settings": {
                "enabled": data["pr_enabled"],
                "target_branches": [p.strip() for p in data["pr_target_branches"].split(",") if p.strip()] or ["*"],
                "post_build_status": data["pr_post_build_status"],
                "post_summary_comment": data["pr_post_summary_comment"],
                "status_per_scanner": data["pr_status_per_scanner"],
                "deny_packages": data["pr_deny_packages"],
                "require_lockfile_update": data["pr_require_lockfile_update"],
                "vulnerabilities": data["pr_vulnerabilities"] or "warn",
                "vulnerability_min_severity": data["pr_vulnerability_min_severity"] or "high",
            },
        }


class IntegrationCreateForm(SettingsFieldsMixin, CredentialsForm):
    # Not required here: the service reports every problem at once, by field.
    name = forms.CharField(max_length=200, required=False)
    bitbucket_url = forms.CharField(
        required=False,
        label="Bitbucket URL",
        help_text="A workspace (https://bitbucket.org/acme) or a project "
        "(https://bitbucket.org/acme/workspace/projects/KEY). "
        "Or leave empty and fill in workspace and project key.",
    )
    workspace = forms.CharField(required=False, help_text="Workspace ID, if no URL is given.")
    project_key = forms.CharField(required=False, help_text="Optional: connect only this project.")
    parent = forms.ModelChoiceField(
        queryset=Namespace.objects.none(),
        label="Parent namespace",
        help_text="The workspace's namespace is created under this one.",
    )

    field_order = [
        "name",
        "bitbucket_url",
        "workspace",
        "project_key",
        "parent",
        "auth_method",
        "email",
        "token",
        "key",
        "secret",
        "scanners",
        "scan_interval_hours",
        "labels",
        "description",
    ]

    def __init__(self, *args, parent_queryset=None, **kwargs):
        super().__init__(*args, **kwargs)
        if parent_queryset is not None:
            self.fields["parent"].queryset = parent_queryset
            only = list(parent_queryset[:2])
            if len(only) == 1:  # the only place it can go: chosen already
                self.fields["parent"].initial = only[0].pk
        self.fields["parent"].label_from_instance = lambda ns: f"{ns.tenant.name} / {ns.name}"
        # A sensible start: dependencies need only read access (posture needs admin scopes).
        self.fields["scanners"].initial = ["dependencies"]


class IntegrationSettingsForm(SettingsFieldsMixin):
    name = forms.CharField(max_length=200)
    status = forms.ChoiceField(
        choices=[(IntegrationStatus.ACTIVE, "Active"), (IntegrationStatus.PAUSED, "Paused (no scheduled scans)")],
    )
    confirm_failed = forms.BooleanField(
        required=False,
        label="Save anyway",
        help_text="Save these settings although the credentials lack a scope they need (that part will fail).",
    )
    field_order = ["name", "status", "scanners", "scan_interval_hours", "labels", "description"]

    def settings_values(self) -> dict:
        return {**super().settings_values(), "name": self.cleaned_data["name"], "status": self.cleaned_data["status"]}

    def save_to(self, integration: Integration, *, actor):
        """Save through the service (new scanners and PR scans are checked against
        Bitbucket first). Returns ``(saved, report)``; the reasons are on the form."""
        try:
            report = services.integration_update(
                integration=integration,
                actor=actor,
                confirmed=self.cleaned_data["confirm_failed"],
                **self.settings_values(),
            )
        except services.VerificationFailed as exc:
            self.add_error(
                None,
                "The credentials lack what the new settings need; nothing was saved. Update the credentials, or "
                "tick 'Save anyway' to keep these settings regardless.",
            )
            return False, exc.report
        except ValidationError as exc:
            apply_service_errors(self, exc)
            return False, None
        return True, report


class DeleteConfirmForm(forms.Form):
    confirm_name = forms.CharField(label="Type the integration's name to confirm")

    def __init__(self, *args, integration: Integration, **kwargs):
        super().__init__(*args, **kwargs)
        self.integration = integration

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.integration.name:
            raise ValidationError(f"Type '{self.integration.name}' exactly to delete this integration.")
        return value
