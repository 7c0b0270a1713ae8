"""Settings of the example: Keel's two endpoints, its router, nothing else.

Endpoints and credentials come from the environment; see
contrib/django/keel_django/settings_example.py for the variables and for why
the connection settings make a failover cost at most one request.
"""

import os
import secrets

from keel_django.settings_example import DATABASE_ROUTERS as KEEL_ROUTERS, KEEL_MIDDLEWARE, keel_databases

# The example keeps no sessions or signed cookies, so a per-process key is
# harmless; a real deployment sets DJANGO_SECRET_KEY.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"] + [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.gis",
    "deals",
]

MIDDLEWARE = KEEL_MIDDLEWARE + [
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "geodeals.urls"
WSGI_APPLICATION = "geodeals.wsgi.application"

DATABASES = keel_databases()
DATABASE_ROUTERS = KEEL_ROUTERS

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# With DEBUG off Django would only mail errors to ADMINS; print them instead,
# so a failed request during a failover shows up in the server's output.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
}
