-- Operating Raiox: heartbeats of the sweepers and workers for the system view, and erasure of a patient's
-- data on request (LGPD / HIPAA-style), with the objects to delete kept in an outbox so none is forgotten.

-- The last time each sweeper, worker or function reported in ("sweeper:notify", "worker:<host>:<pid>" …).
CREATE TABLE heartbeats (
    name     text PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    details  jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- An erased case keeps its id, status, decision (implant, time) and audit trail for statistics; its X-rays,
-- personal fields and free texts are gone.
ALTER TABLE cases ADD COLUMN erased_at timestamptz;
ALTER TABLE cases ADD COLUMN erased_by text;
ALTER TABLE cases ADD CONSTRAINT cases_erased_have_no_personal_fields
    CHECK (erased_at IS NULL OR (submitter_name IS NULL AND submitter_email IS NULL AND client_id IS NULL));

-- Objects whose last reference was erased, deleted from object storage after the commit; a sweep retries
-- whatever is left (storage down at the time).
CREATE TABLE object_deletions (
    storage_key   text PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now()
);

-- Access to a case is audited (who opened it, who was handed an X-ray URL); the case view lists it.
CREATE INDEX audit_log_actor_at ON audit_log (actor, at);
