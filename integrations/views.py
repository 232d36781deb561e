"""Portal pages for tenant users: integrations, namespaces, projects, the account page.

Thin views: forms shape input, services write, selectors read. Every object is loaded
within ``request.tenant`` (another tenant's id is a 404); roles come from
``tenant_view``. Pages that show scanning data (a project's page, scans, sync logs,
packages, posture) live in ``scanning/views.py``: integrations never imports scanning.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.http import HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from integrations import services
from integrations.bitbucket.credentials import Credentials
from integrations.bitbucket.verify import scopes_guide
from integrations.crypto import SealedSecret
from integrations.forms import (
    CredentialsUpdateForm,
    DeleteConfirmForm,
    IntegrationCreateForm,
    IntegrationSettingsForm,
    apply_service_errors,
)
from integrations.models import Integration, Namespace, Project, Reference, Role
from integrations.portal import SESSION_KEY, can, tenant_view
from integrations.selectors import (
    delete_preview_in_words,
    integration_delete_preview,
    integration_list,
    integrations_with_health,
    namespace_subtree_ids,
    tenants_visible,
    user_has_api_token,
)

PENDING_KEY = "portal_pending_credentials"
sensitive = sensitive_post_parameters("token", "secret")


@login_required
@require_POST
def tenant_switch(request):
    tenant_id = request.POST.get("tenant", "")
    if not tenant_id.isdigit() or len(tenant_id) > 18:
        return HttpResponseBadRequest("Choose a tenant from the list.")
    tenant = get_object_or_404(tenants_visible(user=request.user), pk=int(tenant_id))
    request.session[SESSION_KEY] = tenant.pk
    messages.info(request, f"Now working in {tenant.name}.")
    # Only a path on this site: never an open redirect (https://evil.example, //evil.example).
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ) or not target.startswith("/"):
        target = reverse("portal:integrations")
    return HttpResponseRedirect(target)


def tenant_integrations(request):
    return integration_list(tenant=request.tenant)


def get_integration(request, pk: int) -> Integration:
    return get_object_or_404(tenant_integrations(request), pk=pk)


# --- Integrations ------------------------------------------------------------------------------


@tenant_view()
def integrations_index(request):
    count = tenant_integrations(request).count()
    return render(request, "portal/integrations_index.html", {"bitbucket_count": count})


@tenant_view()
def bitbucket_manage(request):
    integrations = integrations_with_health(tenant_integrations(request)).order_by("name")
    return render(request, "portal/bitbucket_manage.html", {"integrations": integrations})


def _pending_credentials(request, form, key: str = PENDING_KEY) -> dict | None:
    """Credentials kept (encrypted) in the session after a Verify (passed or failed), so
    the secret need not be typed twice and is never echoed into the page."""
    pending = request.session.get(key)
    if not pending or form.cleaned_data.get("token") or form.cleaned_data.get("secret"):
        return None
    if pending.get("auth_method") != form.cleaned_data["auth_method"]:
        return None
    creds = Credentials.from_json(pending["auth_method"], SealedSecret(pending["sealed"]).reveal())
    return {
        "email": creds.identity if creds.method == "api_token" else "",
        "key": creds.identity if creds.method == "oauth" else "",
        "token": creds.secret if creds.method != "oauth" else "",
        "secret": creds.secret if creds.method == "oauth" else "",
    }


@sensitive
@tenant_view(Role.ADMIN)
def bitbucket_add(request):
    parents = Namespace.objects.filter(tenant=request.tenant, managed=False).select_related("tenant").order_by("name")
    form = IntegrationCreateForm(request.POST or None, parent_queryset=parents)
    report = None
    if request.method == "GET":
        request.session.pop(PENDING_KEY, None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        credentials = _pending_credentials(request, form) or form.credentials()
        pr_enabled = form.settings_values()["pr_settings"]["enabled"]
        if request.POST.get("action") == "verify":
            try:
                _, creds, report = services.integration_verify_draft(
                    tenant=request.tenant,
                    auth_method=data["auth_method"],
                    credentials=credentials,
                    bitbucket_url=data["bitbucket_url"],
                    workspace=data["workspace"],
                    project_key=data["project_key"],
                    scanners=data["scanners"],
                    pr_enabled=pr_enabled,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                _pending_keep(request, PENDING_KEY, services.credentials_sealed(creds))
        else:
            try:
                integration = services.integration_create(
                    tenant=request.tenant,
                    parent=data["parent"],
                    name=data["name"],
                    auth_method=data["auth_method"],
                    credentials=credentials,
                    bitbucket_url=data["bitbucket_url"],
                    workspace=data["workspace"],
                    project_key=data["project_key"],
                    actor=request.user,
                    **form.settings_values(),
                )
            except services.VerificationFailed as exc:
                report = exc.report
                form.add_error(None, "Bitbucket verification failed; nothing was saved. See the checks below.")
                _pending_keep(request, PENDING_KEY, exc.kept)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                request.session.pop(PENDING_KEY, None)
                messages.success(request, f"Connected {integration.bitbucket_url}. The first scan has started.")
                return redirect("portal:bitbucket_manage")
    connect = ("name", "bitbucket_url", "workspace", "project_key", "parent")
    credentials = ("email", "token", "key", "secret")
    steps = {
        "connect": [form[n] for n in connect],
        "method": [form["auth_method"]],
        "secret": [form[n] for n in credentials],
        "settings": [f for f in form if f.name not in (*connect, *credentials, "auth_method")],
    }
    return render(
        request,
        "portal/bitbucket_add.html",
        {
            "form": form,
            "steps": steps,
            "scopes": scopes_guide(),
            "report": report,
            "credentials_kept": bool(request.session.get(PENDING_KEY)),
        },
    )


def _pending_keep(request, key: str, kept: dict | None) -> None:
    """Keep verified (or refused) credentials for the next attempt: encrypted, in the session."""
    if kept is not None:
        request.session[key] = kept


@sensitive
@tenant_view(Role.ADMIN)
def bitbucket_credentials(request, pk: int):
    """Update Credentials: the new credentials are verified as on Add before anything is
    saved; a failing required check is saved only when the person confirms it."""
    integration = get_integration(request, pk)
    key = f"{PENDING_KEY}:{integration.pk}"
    form = CredentialsUpdateForm(request.POST or None, initial=CredentialsUpdateForm.initial_for(integration))
    report = None
    if request.method == "GET":
        request.session.pop(key, None)
    if request.method == "POST" and form.is_valid():
        rescan = request.POST.get("action") != "save"
        saved, report, kept = form.save_to(
            integration, actor=request.user, credentials=_pending_credentials(request, form, key), rescan=rescan
        )
        _pending_keep(request, key, kept)
        if saved:
            request.session.pop(key, None)
            done = "A scan has started with them." if rescan else "Rescan to use them now."
            if report is not None and not report.ok:
                messages.warning(request, f"Credentials of '{integration}' saved although verification failed. {done}")
            else:
                messages.success(request, f"Credentials of '{integration}' verified and saved. {done}")
            return redirect("portal:bitbucket_manage")
    return render(
        request,
        "portal/bitbucket_credentials.html",
        {
            "form": form,
            "integration": integration,
            "report": report,
            "credentials_kept": bool(request.session.get(key)),
        },
    )


@tenant_view(Role.ADMIN)
def bitbucket_edit(request, pk: int):
    integration = get_integration(request, pk)
    form = IntegrationSettingsForm(request.POST or None, initial=IntegrationSettingsForm.initial_from(integration))
    report = None
    if request.method == "POST" and form.is_valid():
        saved, report = form.save_to(integration, actor=request.user)
        if saved:
            if report is not None and not report.ok:
                messages.warning(request, "Saved although the credentials lack what the new settings need.")
            else:
                checked = " The credentials were checked for them." if report is not None else ""
                messages.success(request, f"Saved.{checked} Changes apply from the next scan; Rescan applies them now.")
            return redirect("portal:bitbucket_edit", pk=integration.pk)
    return render(
        request,
        "portal/bitbucket_edit.html",
        {
            "form": form,
            "report": report,
            "integration": integration,
            # Only reaches admins and owners (this view needs the admin role).
            "webhook_secret": integration.webhook_secret.reveal() if integration.webhook_secret else "",
        },
    )


@tenant_view(Role.ADMIN)
@require_POST
def webhook_secret_rotate(request, pk: int):
    integration = get_integration(request, pk)
    services.webhook_secret_rotate(integration=integration, actor=request.user)
    messages.success(request, "Webhook secret rotated. Bitbucket webhooks signed with the old secret are now refused.")
    return redirect("portal:bitbucket_edit", pk=integration.pk)


@tenant_view(Role.ADMIN)
def bitbucket_delete(request, pk: int):
    integration = get_integration(request, pk)
    preview = integration_delete_preview(integration=integration)
    form = DeleteConfirmForm(request.POST or None, integration=integration)
    if request.method == "POST" and form.is_valid():
        services.integration_delete_request(integration=integration, actor=request.user)
        messages.success(request, f"Deleting '{integration}': its namespaces, projects and results are being removed.")
        return redirect("portal:bitbucket_manage")
    return render(
        request,
        "portal/bitbucket_delete.html",
        {"form": form, "integration": integration, "preview": delete_preview_in_words(preview)},
    )


# --- Namespaces and projects ---------------------------------------------------------------------


class NamespaceForm(forms.Form):
    name = forms.CharField(max_length=255)
    slug = forms.CharField(max_length=64, required=False, help_text="Optional: a-z, 0-9, '-' and '_'.")
    parent = forms.ModelChoiceField(
        queryset=Namespace.objects.none(), required=False, help_text="Empty for a top-level namespace."
    )


@tenant_view()
def namespaces(request):
    nodes = list(
        Namespace.objects.filter(tenant=request.tenant)
        .select_related("integration")
        .annotate(projects_count=Count("projects", distinct=True))
        .order_by("name")
    )
    by_parent: dict = {}
    for node in nodes:
        by_parent.setdefault(node.parent_id, []).append(node)

    def walk(parent_id, depth):
        for node in by_parent.get(parent_id, []):
            node.depth = depth
            yield node
            yield from walk(node.pk, depth + 1)

    def subtree_total(node) -> int:  # projects in the namespace and every namespace under it
        node.subtree_projects = node.projects_count + sum(subtree_total(c) for c in by_parent.get(node.pk, []))
        return node.subtree_projects

    for root in by_parent.get(None, []):
        subtree_total(root)

    form = NamespaceForm(request.POST or None)
    form.fields["parent"].queryset = Namespace.objects.filter(tenant=request.tenant, managed=False)
    if request.method == "POST":
        if not can(request, Role.ADMIN):
            messages.error(request, "Only admins and owners can add namespaces.")
        elif form.is_valid():
            try:
                services.namespace_create(
                    tenant=request.tenant,
                    parent=form.cleaned_data["parent"],
                    name=form.cleaned_data["name"],
                    slug=form.cleaned_data["slug"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Namespace '{form.cleaned_data['name']}' added.")
                return redirect("portal:namespaces")
    return render(request, "portal/namespaces.html", {"tree": list(walk(None, 0)), "form": form})


@tenant_view(Role.ADMIN)
@require_POST
def namespace_delete(request, pk: int):
    namespace = get_object_or_404(Namespace, tenant=request.tenant, pk=pk)
    try:
        services.namespace_delete(namespace=namespace, actor=request.user)
        messages.success(request, f"Deleted namespace '{namespace}'.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("portal:namespaces")


@tenant_view()
def projects(request):
    query = (request.GET.get("q") or request.GET.get("search") or "").strip()
    namespace = None
    namespace_id = request.GET.get("namespace", "")
    if namespace_id.isdigit() and len(namespace_id) < 19:
        namespace = get_object_or_404(Namespace, tenant=request.tenant, pk=int(namespace_id))
    qs = (
        Project.objects.filter(namespace__tenant=request.tenant)
        .select_related("namespace", "integration")
        .prefetch_related(
            Prefetch("references", queryset=Reference.objects.filter(is_default=True), to_attr="default_references")
        )
        .order_by("full_name", "id")
    )
    if query:
        qs = qs.filter(Q(name__icontains=query) | Q(full_name__icontains=query))
    if namespace is not None:  # the namespace and everything under it
        qs = qs.filter(namespace_id__in=namespace_subtree_ids(root_id=namespace.pk))
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "portal/projects.html", {"page": page, "q": query, "namespace": namespace})


class ProjectImportForm(forms.Form):
    url = forms.CharField(label="Repository URL", help_text="For example https://bitbucket.org/acme/api")
    namespace = forms.ModelChoiceField(
        queryset=Namespace.objects.none(),
        help_text="A namespace you created (managed ones follow Bitbucket and take no additions).",
    )
    integration = forms.ModelChoiceField(
        queryset=Integration.objects.none(), help_text="Whose credentials read the repository."
    )


@tenant_view(Role.ADMIN)
def project_import(request):
    form = ProjectImportForm(request.POST or None)
    form.fields["namespace"].queryset = Namespace.objects.filter(tenant=request.tenant, managed=False)
    form.fields["integration"].queryset = tenant_integrations(request)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_import(
                namespace=form.cleaned_data["namespace"],
                integration=form.cleaned_data["integration"],
                url=form.cleaned_data["url"],
                actor=request.user,
            )
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Added {project.full_name}.")
            return redirect("portal:project_detail", pk=project.pk)
    return render(request, "portal/project_import.html", {"form": form})


# --- The user's own page -------------------------------------------------------------------------


@login_required
@never_cache
def account(request):
    """API token: create (shown once), or revoke."""
    new_key = None
    if request.method == "POST":
        if request.POST.get("action") == "create":
            new_key = services.api_token_create(user=request.user, actor=request.user)
            messages.success(request, "New API token created. Copy it now: it is not shown again.")
        else:
            services.api_token_revoke(user=request.user, actor=request.user)
            messages.success(request, "API token revoked.")
    has_token = user_has_api_token(user=request.user)
    return render(
        request,
        "portal/account.html",
        {"new_key": new_key, "has_token": has_token, "api_example": json.dumps({"Authorization": "Token <key>"})},
    )
