"""Settings for the test suite: the base settings plus fixed test keys.

``DATABASE_URL`` still applies, so the same suite runs on PostgreSQL.
"""

import os

# Set before the base settings read them; real values in the environment win.
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DEBUG", "true")

from config.settings import *  # noqa: E402,F403
from config.settings import DATA_DIR, DATABASES, INSTALLED_APPS, Q_CLUSTER  # noqa: E402

# The suite tests the sandbox's commands, whatever DEBUG and PORTAL_DEV_TOOLS say.
if "devtools" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "devtools"]

# Two fixed keys, newest first, so tests exercise decryption with an older key.
FIELD_ENCRYPTION_KEYS = [
    "paguwMV_2smqTOIgj2MQcCPjPsh1yCKGA1Uj-OYCbOE=",
    "stqOBaY5MBuqzFqVIJkA2slqJl1daYSU1QZHRk8zkAE=",
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_SSL_REDIRECT = False
# Tasks run inline in tests so a service's enqueued work is observable.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DATA_DIR.mkdir(parents=True, exist_ok=True)
# Tests never reach the internet: the API default is a closed loopback port (answers at
# once with "connection refused"); tests that need Bitbucket start the sandbox. The web
# URL keeps Bitbucket's, so URL parsing is tested against the real host name.
BITBUCKET_API_URL = "http://127.0.0.1:9/2.0"
BITBUCKET_BACKOFF_FACTOR = 0.01
BITBUCKET_BACKOFF_MAX = 0.05
WEBHOOK_LOOKUP_TTL = 0
# The request budget in the test database (rolled back with each test); its Redis store has
# tests of its own.
REQUEST_BUDGET_STORE = "database"  # tests change secrets and expect it at once

# Live-server request threads close their connection when the request ends (persistent
# connections would outlive the threads and keep PostgreSQL's test database in use at teardown).
DATABASES["default"]["CONN_MAX_AGE"] = 0

# Throttles stay on, at rates the suite (schemathesis included) never reaches; the tests
# of throttling set their own.
API_THROTTLE_ANON = API_THROTTLE_USER = "100000/minute"
