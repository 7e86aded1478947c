-- Erasure that finishes the job: a case erased here is also erased where it came from. An `erase` job asks
-- Jotform's API to delete the submission (DELETE /submission/{id}), retried with backoff while Jotform is
-- unreachable, failed with the reason (and an audit row) when it cannot be done.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('fetch', 'embed', 'notify', 'erase'));

-- Retention by status: cases are found by status and age (the time of their last change).
CREATE INDEX cases_status_updated_at ON cases (status, updated_at) WHERE erased_at IS NULL;
