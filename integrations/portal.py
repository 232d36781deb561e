"""Plumbing shared by the portal pages: the current tenant, role checks, sidebar context."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from integrations.models import Tenant
from integrations.selectors import ROLE_RANK, membership_role, tenants_visible

SESSION_KEY = "portal_tenant_id"


def current_tenant(request) -> Tenant | None:
    """The tenant chosen in the switcher, else the user's first; None if they have none."""
    if hasattr(request, "_portal_tenant"):
        return request._portal_tenant
    visible = tenants_visible(user=request.user).order_by("name")
    tenant = visible.filter(pk=request.session.get(SESSION_KEY)).first() or visible.first()
    request._portal_tenant = tenant
    return tenant


def tenant_role(request) -> str | None:
    tenant = current_tenant(request)
    return membership_role(user=request.user, tenant=tenant) if tenant else None


def can(request, minimum: str) -> bool:
    role = tenant_role(request)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def tenant_view(minimum: str = "viewer"):
    """Login required, a current tenant, and at least ``minimum`` role in it. Views get
    ``request.tenant``; anything they load must be filtered by it (else 404)."""

    def decorate(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            tenant = current_tenant(request)
            if tenant is None:
                raise Http404("You are not a member of any organisation yet. Ask an owner to add you.")
            if not can(request, minimum):
                raise PermissionDenied(f"This needs the {minimum} role in {tenant.name}.")
            request.tenant = tenant
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def portal_context(request) -> dict:
    """Context processor: the tenant switcher and role-dependent sidebar."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    tenant = current_tenant(request)
    role = tenant_role(request)
    return {
        "portal_tenants": tenants_visible(user=request.user).order_by("name"),
        "portal_tenant": tenant,
        "portal_role": role,
        "can_admin": role is not None and ROLE_RANK[role] >= ROLE_RANK["admin"],
        "can_rescan": role is not None and ROLE_RANK[role] >= ROLE_RANK["member"],
    }
