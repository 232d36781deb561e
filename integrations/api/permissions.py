"""Tenant roles for the API: viewer reads, member also rescans, admin and owner do everything."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from integrations.models import Role
from integrations.selectors import has_role


class TenantRole(BasePermission):
    """Views declare ``write_role`` (default admin) and may map actions to roles in
    ``action_roles``. Objects outside the user's tenants never reach this: querysets
    are scoped, so they are 404s."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def required_role(self, request, view) -> str:
        roles = getattr(view, "action_roles", {})
        if getattr(view, "action", None) in roles:
            return roles[view.action]
        return Role.VIEWER if request.method in SAFE_METHODS else getattr(view, "write_role", Role.ADMIN)

    def has_object_permission(self, request, view, obj) -> bool:
        return has_role(user=request.user, tenant=view.tenant_of(obj), minimum=self.required_role(request, view))
