"""Routing rules of PrimaryReplicaRouter, on in-memory SQLite (no server needed)."""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "replica": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "analytics": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction

from keel_django.middleware import PinPrimaryMiddleware
from keel_django.router import PrimaryReplicaRouter, is_pinned_to_primary, pinned_to_primary, pinned_to_primary_scope

MODEL = ContentType


class RouterTest(unittest.TestCase):
    def setUp(self):
        self.router = PrimaryReplicaRouter()
        # Each test starts unpinned, whatever an earlier one left behind.
        scope = pinned_to_primary_scope()
        scope.__enter__()
        self.addCleanup(scope.__exit__, None, None, None)

    def test_reads_go_to_the_replica(self):
        self.assertEqual(self.router.db_for_read(MODEL), "replica")

    def test_writes_go_to_the_primary_and_pin_later_reads(self):
        self.assertEqual(self.router.db_for_write(MODEL), "default")
        self.assertTrue(is_pinned_to_primary())
        self.assertEqual(self.router.db_for_read(MODEL), "default")

    def test_writes_never_go_to_the_replica(self):
        for pinned in (False, True):
            with pinned_to_primary_scope(pinned):
                self.assertEqual(self.router.db_for_write(MODEL), "default")
        with transaction.atomic(using="replica"):
            self.assertEqual(self.router.db_for_write(MODEL), "default")

    def test_reads_inside_a_transaction_on_the_primary_stay_there(self):
        with transaction.atomic(using="default"):
            self.assertEqual(self.router.db_for_read(MODEL), "default")
        self.assertEqual(self.router.db_for_read(MODEL), "replica")

    def test_pinned_to_primary_is_scoped(self):
        with pinned_to_primary():
            self.assertEqual(self.router.db_for_read(MODEL), "default")
        self.assertEqual(self.router.db_for_read(MODEL), "replica")

    def test_the_middleware_unpins_at_the_end_of_the_request(self):
        seen = []

        def view(request):
            seen.append(self.router.db_for_read(MODEL))
            self.router.db_for_write(MODEL)
            seen.append(self.router.db_for_read(MODEL))
            return "response"

        middleware = PinPrimaryMiddleware(view)
        self.assertEqual(middleware(object()), "response")
        self.assertEqual(middleware(object()), "response")
        # Both requests start on the replica: the first one's write did not leak into the second.
        self.assertEqual(seen, ["replica", "default", "replica", "default"])
        self.assertEqual(self.router.db_for_read(MODEL), "replica")

    def test_the_middleware_unpins_when_the_view_raises(self):
        def view(request):
            self.router.db_for_write(MODEL)
            raise RuntimeError("view failed")

        with self.assertRaises(RuntimeError):
            PinPrimaryMiddleware(view)(object())
        self.assertFalse(is_pinned_to_primary())

    def test_a_pin_in_one_thread_does_not_reach_another(self):
        self.router.db_for_write(MODEL)
        other = []
        thread = threading.Thread(target=lambda: other.append(self.router.db_for_read(MODEL)))
        thread.start()
        thread.join()
        self.assertEqual(other, ["replica"])
        self.assertEqual(self.router.db_for_read(MODEL), "default")

    def test_migrations_run_on_the_primary_only(self):
        self.assertIs(self.router.allow_migrate("default", "deals"), True)
        self.assertIs(self.router.allow_migrate("replica", "deals"), False)
        # Other aliases belong to other routers.
        self.assertIsNone(self.router.allow_migrate("analytics", "deals"))

    def test_relations_between_the_two_aliases_are_allowed(self):
        a, b, c = ContentType(), ContentType(), ContentType()
        a._state.db, b._state.db, c._state.db = "default", "replica", "analytics"
        self.assertIs(self.router.allow_relation(a, b), True)
        self.assertIs(self.router.allow_relation(b, a), True)
        self.assertIsNone(self.router.allow_relation(a, c))

    def test_without_a_replica_reads_go_to_the_primary(self):
        replica = connections.databases.pop("replica")
        try:
            self.assertEqual(self.router.db_for_read(MODEL), "default")
        finally:
            connections.databases["replica"] = replica


class SettingsExampleTest(unittest.TestCase):
    def setUp(self):
        from keel_django import settings_example

        self.build = settings_example.keel_databases

    def test_single_endpoints(self):
        dbs = self.build({"KEEL_RW_HOST": "rw.example", "KEEL_RW_PORT": "5432", "KEEL_RO_HOST": "ro.example", "KEEL_RO_PORT": "5433"})
        self.assertEqual((dbs["default"]["HOST"], dbs["default"]["PORT"]), ("rw.example", "5432"))
        self.assertEqual((dbs["replica"]["HOST"], dbs["replica"]["PORT"]), ("ro.example", "5433"))
        self.assertEqual(dbs["default"]["ENGINE"], "django.contrib.gis.db.backends.postgis")
        self.assertEqual(dbs["replica"]["TEST"], {"MIRROR": "default"})
        self.assertNotIn("target_session_attrs", dbs["default"]["OPTIONS"])
        self.assertEqual(dbs["default"]["PASSWORD"], "")
        # long enough to wait out a failover held by the router
        self.assertEqual(dbs["default"]["OPTIONS"]["connect_timeout"], 15)
        for key in ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
            self.assertIn(key, dbs["replica"]["OPTIONS"])

    def test_host_lists_choose_the_session_by_role(self):
        dbs = self.build({"KEEL_RW_HOST": "a,b,c", "KEEL_RW_PORT": "1,2,3", "KEEL_RO_HOST": "a,b,c", "KEEL_RO_PORT": "1,2,3"})
        self.assertEqual(dbs["default"]["OPTIONS"]["target_session_attrs"], "read-write")
        self.assertEqual(dbs["replica"]["OPTIONS"]["target_session_attrs"], "prefer-standby")
        # spent per host: a silent host must not eat the whole request
        self.assertEqual(dbs["default"]["OPTIONS"]["connect_timeout"], 3)

    def test_password_and_timeouts_from_the_environment(self):
        dbs = self.build({"KEEL_DB_PASSWORD": "from-env", "KEEL_CONNECT_TIMEOUT": "7", "KEEL_CONN_MAX_AGE": "0"})
        self.assertEqual(dbs["replica"]["PASSWORD"], "from-env")
        self.assertEqual(dbs["replica"]["OPTIONS"]["connect_timeout"], 7)
        self.assertEqual(dbs["default"]["CONN_MAX_AGE"], 0)

    def test_health_checks_only_where_django_has_them(self):
        dbs = self.build({})
        self.assertEqual("CONN_HEALTH_CHECKS" in dbs["default"], django.VERSION >= (4, 1))


if __name__ == "__main__":
    unittest.main()
