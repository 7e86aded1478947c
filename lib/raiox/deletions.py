"""Deleting the objects the erasure outbox lists. Only code that holds object storage imports this: approve's
erase, the CLI and the webhook's sweep; the notify function, which erases by retention, never does."""

from __future__ import annotations

from raiox import erasure
from raiox.adapters.storage import ObjectNotFound, StorageError
from raiox.erasure import ErasureReport
from raiox.repository import objects
from raiox.services import Services


def delete_objects(services: Services, report: ErasureReport) -> ErasureReport:
    """Delete what the outbox holds; what cannot be deleted now (storage down) stays for the next sweep."""
    with services.db.transaction() as conn:
        keys = objects.due_deletions(conn)
    for key in keys:
        try:
            services.store.delete(key)
        except ObjectNotFound:
            pass
        except StorageError:
            report.objects_left += 1
            continue
        with services.db.transaction() as conn:
            objects.deleted(conn, key)
        report.objects_deleted += 1
    return report


def erase_now(services: Services, case_id: int, *, actor: str) -> ErasureReport:
    """Erase one case and delete its objects at once (those another case still uses stay)."""
    return delete_objects(services, erasure.erase(services, case_id, actor=actor))
