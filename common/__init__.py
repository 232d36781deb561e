"""Pure helpers every app may use (versions, package identities): no Django, no app
imports, so the one-way layering (scanning -> synclogs -> integrations) holds."""
