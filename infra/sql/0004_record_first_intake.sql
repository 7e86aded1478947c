-- Intake records first and fetches later (a `fetch` job), so no accepted submission is ever lost; sign-in
-- throttling per name and client address; sign-out that ends sessions on the server; reconciliation
-- with Jotform's API.

-- A fetch job downloads, checks and stores a case's X-rays, then queues its embed job.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('fetch', 'embed', 'notify'));

-- An X-ray is `pending` until the fetch step has stored it (or failed it for good). A direct upload's
-- bytes wait in `upload` (committed with the case, so nothing reaches object storage before the case
-- exists) and are cleared once stored.
ALTER TABLE case_images DROP CONSTRAINT case_images_status_check;
ALTER TABLE case_images ADD CONSTRAINT case_images_status_check
    CHECK (status IN ('pending', 'stored', 'embedded', 'failed'));
ALTER TABLE case_images DROP CONSTRAINT case_images_check;
ALTER TABLE case_images ADD CONSTRAINT case_images_stored_have_a_key
    CHECK (status IN ('pending', 'failed') OR storage_key IS NOT NULL);
ALTER TABLE case_images ADD COLUMN upload bytea;
ALTER TABLE case_images ADD CONSTRAINT case_images_upload_only_while_pending
    CHECK (upload IS NULL OR status = 'pending');

-- Submission ids are namespaced by source: a JSON or upload sender can never take a Jotform id first.
ALTER TABLE cases DROP CONSTRAINT cases_submission_id_key;
ALTER TABLE cases ADD CONSTRAINT cases_source_submission_id_key UNIQUE (source, submission_id);

-- Failed sign-ins are counted per name and client address, so a stranger who knows a reviewer's name only
-- slows themselves down; `session_epoch` grows on sign-out and ends every token issued before.
ALTER TABLE login_failures ADD COLUMN client text NOT NULL DEFAULT '';
CREATE INDEX login_failures_name_key_client_at ON login_failures (name_key, client, at);
ALTER TABLE reviewers ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;

-- Reconciliation with Jotform's API: per form, the newest submission time seen and when it last ran.
CREATE TABLE jotform_reconciliation (
    form_id      text PRIMARY KEY,
    watermark    timestamptz,
    last_run_at  timestamptz,
    last_error   text,
    recorded     integer NOT NULL DEFAULT 0
);
