"""Where each database alias connects: `manage.py dbroles [--ids 1,2,3]` prints JSON.

Shows that `replica` reaches a standby (pg_is_in_recovery() is true) and
`default` the leader, and which of the given deals each one can see
(replicas may lag by a few milliseconds).
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import connections, router

from deals.models import Deal


class Command(BaseCommand):
    help = "Prints, per database alias, whether it is a standby, its server port and the deals it sees."

    def add_arguments(self, parser):
        parser.add_argument("--ids", default="", help="comma-separated deal ids to look for")

    def handle(self, *args, **options):
        try:
            ids = [int(i) for i in options["ids"].split(",") if i.strip()]
        except ValueError:
            raise CommandError(f"--ids must be comma-separated integers, got {options['ids']!r}") from None
        report = {"read_alias": router.db_for_read(Deal), "aliases": {}}
        for alias in connections:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery(), inet_server_port()")
                in_recovery, server_port = cursor.fetchone()
            report["aliases"][alias] = {
                "in_recovery": in_recovery,
                "server_port": server_port,
                "deals": Deal.objects.using(alias).count(),
                "ids_seen": sorted(Deal.objects.using(alias).filter(id__in=ids).values_list("id", flat=True)),
            }
        self.stdout.write(json.dumps(report))
