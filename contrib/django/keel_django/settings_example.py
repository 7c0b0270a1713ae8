"""Django settings for an application on Keel: copy the parts you need.

Keel gives an application two endpoints: read-write (always the current
leader) and read-only (streaming replicas). Django sees them as two database
aliases, `default` and `replica`, and PrimaryReplicaRouter picks one per
query. The endpoints come from the environment so that one settings file
serves laptops (`keel up`) and production:

    KEEL_RW_HOST, KEEL_RW_PORT   read-write endpoint (default 127.0.0.1:6402, `keel up`'s router)
    KEEL_RO_HOST, KEEL_RO_PORT   read-only endpoint  (default 127.0.0.1:6403)
    KEEL_DB_NAME, KEEL_DB_USER   database and role (default app / app: the application role
                                 that owns the database; the superuser cannot log in over TCP)
    KEEL_DB_PASSWORD             optional; when unset libpq reads PGPASSFILE or ~/.pgpass
    KEEL_SSLROOTCERT             the cluster CA (keel up: DIR/tls/ca.crt); connections use
                                 sslmode=verify-full, so the server proves who it is before
                                 any password is sent
    KEEL_SSLMODE                 default verify-full; the nodes accept TLS connections only
    KEEL_APP_NAME                shown as application_name in pg_stat_activity
    KEEL_CONNECT_TIMEOUT         seconds a new connection may take, per host (default 15 for
                                 one address, 3 for a host list; see below)
    KEEL_CONN_MAX_AGE            seconds a connection is reused (default 60)

A host may be a comma-separated list (one entry per node, ports likewise):
libpq then tries each in turn and `target_session_attrs` picks the leader for
`default` and prefers a standby for `replica`. That serves where no Keel
router runs; with the router, one address each is enough.

Why a failover costs at most one request per worker:
  * CONN_MAX_AGE keeps a connection across requests. When its server dies,
    the request using it gets an OperationalError. Django then sees that the
    connection had errors, finds it unusable and closes it at the end of that
    request, so the worker's next request opens a new connection, which goes
    to the new leader. That failed request is the one request.
  * New connections made while no leader serves wait in Keel's router
    (bounded) instead of failing, so later requests are slow, not failed.
    With libpq host lists instead of a router, they fail fast ("session is
    read-only") until a standby is promoted.
  * CONN_HEALTH_CHECKS (Django 4.1+) checks a reused connection before a
    request's first query, so a connection that broke between requests is
    replaced without failing any request; only a request in flight at the
    moment of the failure fails.
  * connect_timeout bounds a new connection to a host that does not answer
    (a dead instance in another zone drops packets instead of refusing):
    without it the OS waits about two minutes, and every request of every
    worker piles up behind it. It also bounds the router's wait, so with one
    router address it defaults to 15 s: longer than a failover with the
    default ttl of 10 s, shorter than a typical worker timeout (gunicorn: 30 s).
    With a host list libpq spends it on each host in turn, hence 3 s there.
  * TCP keepalives (and tcp_user_timeout for data in flight) find a pooled
    connection whose server vanished without closing it, within about
    keepalives_idle + keepalives_interval * keepalives_count seconds instead
    of the kernel's two hours.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import django

DATABASE_ROUTERS = ["keel_django.router.PrimaryReplicaRouter"]

# First, so that a request starts unpinned before any middleware touches the database.
KEEL_MIDDLEWARE = ["keel_django.middleware.PinPrimaryMiddleware"]

# libpq 14+ values (read-write, read-only, primary, standby, prefer-standby, any).
_TARGET_SESSION_ATTRS = {"default": "read-write", "replica": "prefer-standby"}


def _connection_options(alias: str, host: str, env: Mapping[str, str]) -> Dict[str, Any]:
    host_list = "," in host
    options: Dict[str, Any] = {
        "connect_timeout": int(env.get("KEEL_CONNECT_TIMEOUT", "3" if host_list else "15")),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        # Milliseconds that sent data may stay unacknowledged before the
        # connection is dropped: a query to a host that died mid-query fails
        # instead of hanging (Linux only, libpq 12+).
        "tcp_user_timeout": 10_000,
        "application_name": f"{env.get('KEEL_APP_NAME', 'django')}:{alias}",
        "sslmode": env.get("KEEL_SSLMODE", "verify-full"),
    }
    root = env.get("KEEL_SSLROOTCERT")
    if root:
        options["sslrootcert"] = root
    override = env.get(f"KEEL_{'RW' if alias == 'default' else 'RO'}_TARGET_SESSION_ATTRS")
    if override:
        options["target_session_attrs"] = override
    elif host_list:
        # Several hosts: without this, libpq would take the first that
        # answers, which after a failover may be a standby for `default`.
        options["target_session_attrs"] = _TARGET_SESSION_ATTRS[alias]
    return options


def _database(alias: str, host: str, port: str, env: Mapping[str, str]) -> Dict[str, Any]:
    database: Dict[str, Any] = {
        "ENGINE": "django.contrib.gis.db.backends.postgis",
        "NAME": env.get("KEEL_DB_NAME", "app"),
        "USER": env.get("KEEL_DB_USER", "app"),
        # Empty: libpq looks the password up in PGPASSFILE (or ~/.pgpass), so
        # it never sits in settings or in the process's arguments.
        "PASSWORD": env.get("KEEL_DB_PASSWORD", ""),
        "HOST": host,
        "PORT": port,
        "CONN_MAX_AGE": int(env.get("KEEL_CONN_MAX_AGE", "60")),
        # A request-wide transaction on `default` would pin every read of
        # every request to the leader (see the router): use atomic() where
        # a view needs it instead.
        "ATOMIC_REQUESTS": False,
        "OPTIONS": _connection_options(alias, host, env),
    }
    if django.VERSION >= (4, 1):
        database["CONN_HEALTH_CHECKS"] = True
    return database


def keel_databases(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """DATABASES with `default` on the read-write endpoint and `replica` on the read-only one."""
    env = os.environ if environ is None else environ
    rw_host = env.get("KEEL_RW_HOST", "127.0.0.1")
    ro_host = env.get("KEEL_RO_HOST", "127.0.0.1")
    replica = _database("replica", ro_host, env.get("KEEL_RO_PORT", "6403"), env)
    # Tests run against one test database; reads through `replica` must see
    # what the test wrote through `default`.
    replica["TEST"] = {"MIRROR": "default"}
    return {
        "default": _database("default", rw_host, env.get("KEEL_RW_PORT", "6402"), env),
        "replica": replica,
    }


DATABASES = keel_databases()
