"""Send reads to Keel's read-only endpoint and everything else to read-write.

Replicas stream asynchronously, so a read sent to `replica` right after a
write may not see that write yet. The router therefore pins the current
request to the primary as soon as it routes a write, and while a transaction
is open on the primary; PinPrimaryMiddleware clears the pin when the request
ends. Outside requests (management commands, task workers) use
`pinned_to_primary()` to get the same scoping.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

from django.db import connections

PRIMARY_ALIAS = "default"
REPLICA_ALIAS = "replica"

# A ContextVar, not a threading.local: it is per thread under WSGI and
# follows the request across sync_to_async/async_to_sync hops under ASGI.
_pinned_to_primary: contextvars.ContextVar[bool] = contextvars.ContextVar("keel_pinned_to_primary", default=False)


def pin_to_primary() -> None:
    """Send every later read of this request (or context) to the primary."""
    _pinned_to_primary.set(True)


def is_pinned_to_primary() -> bool:
    return _pinned_to_primary.get()


@contextlib.contextmanager
def pinned_to_primary_scope(pinned: bool = False) -> Iterator[None]:
    """Starts a fresh scope (unpinned unless `pinned`) and restores the outer state on exit."""
    token = _pinned_to_primary.set(pinned)
    try:
        yield
    finally:
        _pinned_to_primary.reset(token)


def pinned_to_primary() -> contextlib.AbstractContextManager[None]:
    """`with pinned_to_primary():` reads inside go to the primary."""
    return pinned_to_primary_scope(pinned=True)


class PrimaryReplicaRouter:
    """Reads to `replica`, writes to `default`; never a write to `replica`.

    Subclass and change the two aliases to use other names. Models routed to
    other databases by another router are left alone: this router only
    answers for its two aliases.
    """

    primary_alias = PRIMARY_ALIAS
    replica_alias = REPLICA_ALIAS

    def db_for_read(self, model, **hints) -> str:
        if _pinned_to_primary.get() or self._primary_in_transaction() or not self._replica_configured():
            return self.primary_alias
        return self.replica_alias

    def db_for_write(self, model, **hints) -> str:
        # Django asks before every write (and before select_for_update, which
        # is a write lock): from here on this request reads its own writes.
        _pinned_to_primary.set(True)
        return self.primary_alias

    def allow_relation(self, obj1, obj2, **hints) -> Optional[bool]:
        ours = {self.primary_alias, self.replica_alias}
        if obj1._state.db in ours and obj2._state.db in ours:
            # Both aliases are the same database seen through two endpoints.
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: Optional[str] = None, **hints) -> Optional[bool]:
        if db == self.primary_alias:
            return True
        if db == self.replica_alias:
            # Replicas are read-only; they receive the schema by replication.
            return False
        return None

    def _primary_in_transaction(self) -> bool:
        # Inside atomic() on the primary, a read on another connection would
        # not see the transaction's uncommitted rows, and could see a state
        # older than what the transaction already read.
        if self.primary_alias not in connections.databases:
            return False
        return connections[self.primary_alias].in_atomic_block

    def _replica_configured(self) -> bool:
        # Settings without a replica (a single-node dev setup) still work.
        return self.replica_alias in connections.databases
