-- Review: reviewers who sign in to the admin page, and failed sign-ins for the rate limit.

-- Passwords are stored as scrypt hashes only. A token carries a fingerprint of the hash it was issued
-- under, so setting a new password signs the reviewer out everywhere.
CREATE TABLE reviewers (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    password_hash       text NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX reviewers_name_key ON reviewers (lower(name));

-- One row per failed sign-in, keyed by the lower-cased name tried (known or not), so the limit holds
-- across every function instance. Rows older than the window are deleted as new failures arrive.
CREATE TABLE login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name_key text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_name_key_at ON login_failures (name_key, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- The decided and recently decided lists read decisions by time.
CREATE INDEX review_decisions_decided_at ON review_decisions (decided_at DESC);
