"""Writes for the integrations app, one module per topic.

Every function is keyword-only, atomic at the outermost call, raises
``ValidationError`` (keyed by field where one is at fault) for bad input, and writes
an audit event naming the acting user (``audit``). Views, admin, API, commands and tasks
only adapt their input and call these. Import from here (``from integrations import
services``); the modules are:

* ``audit``: the one audit writer, ``actor_or_none``;
* ``tenants``: tenants and memberships;
* ``namespaces``: the namespace tree (managed ones are read-only to people);
* ``projects``: projects added by hand or imported, their purge, and references;
* ``validation``: an integration's settings, checked once for create and update;
* ``lifecycle``: integrations created, edited, given new credentials or a new webhook secret,
  and asked to be deleted;
* ``purge``: the chunked, restartable deletion of an integration's subtree;
* ``tokens``: API tokens (hashed); ``keys``: re-encryption under the newest key.
"""

from integrations.services.audit import SECRET_KEYS, Actor, actor_or_none, audit
from integrations.services.keys import encryption_keys_rotate
from integrations.services.lifecycle import (
    EDITABLE_FIELDS,
    IMMUTABLE_FIELDS,
    VerificationFailed,
    credentials_sealed,
    credentials_update,
    integration_create,
    integration_delete_request,
    integration_feature_refused,
    integration_overlap_problem,
    integration_update,
    integration_verify,
    integration_verify_draft,
    webhook_secret_rotate,
)
from integrations.services.namespaces import namespace_create, namespace_delete, namespace_update
from integrations.services.projects import (
    project_create,
    project_delete,
    project_import,
    projects_purge,
    reference_move,
    references_remove,
    references_sync,
)
from integrations.services.purge import integration_purge
from integrations.services.tenants import membership_set, tenant_create
from integrations.services.tokens import api_token_create, api_token_revoke
from integrations.services.validation import MAX_SCAN_INTERVAL, MIN_SCAN_INTERVAL, clean_settings

__all__ = [
    "EDITABLE_FIELDS",
    "IMMUTABLE_FIELDS",
    "MAX_SCAN_INTERVAL",
    "MIN_SCAN_INTERVAL",
    "SECRET_KEYS",
    "Actor",
    "VerificationFailed",
    "actor_or_none",
    "api_token_create",
    "api_token_revoke",
    "audit",
    "clean_settings",
    "credentials_sealed",
    "credentials_update",
    "encryption_keys_rotate",
    "integration_create",
    "integration_delete_request",
    "integration_feature_refused",
    "integration_overlap_problem",
    "integration_purge",
    "integration_update",
    "integration_verify",
    "integration_verify_draft",
    "membership_set",
    "namespace_create",
    "namespace_delete",
    "namespace_update",
    "project_create",
    "project_delete",
    "project_import",
    "projects_purge",
    "reference_move",
    "references_remove",
    "references_sync",
    "tenant_create",
    "webhook_secret_rotate",
]
