-- Raiox schema, version 1: implant catalog, cases, results, review, audit trail and durable jobs.
-- Distances are cosine (`<=>`); `<->` is L2 and is not what Raiox ranks by.

CREATE EXTENSION IF NOT EXISTS vector;

-- Implant catalog ------------------------------------------------------------------------------

CREATE TABLE implants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    manufacturer  text NOT NULL CHECK (btrim(manufacturer) <> ''),
    system        text NOT NULL CHECK (btrim(system) <> ''),
    implant_type  text,            -- e.g. bone level, tissue level, zygomatic
    connection    text,            -- e.g. internal hex, conical, external hex
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX implants_manufacturer_system_key ON implants (lower(manufacturer), lower(system));

-- One row per (image, model): the same picture embedded by a newer model is a new row.
CREATE TABLE reference_images (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    implant_id     bigint NOT NULL REFERENCES implants (id) ON DELETE CASCADE,
    storage_key    text NOT NULL,
    sha256         text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    source         text NOT NULL DEFAULT 'catalog'
                   CHECK (source IN ('catalog', 'rendered', 'approved_case')),
    source_case_id bigint,         -- set when source = 'approved_case'
    model_id       text NOT NULL,
    embedding      vector(512) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (implant_id, sha256, model_id)
);
CREATE INDEX reference_images_embedding_hnsw ON reference_images USING hnsw (embedding vector_cosine_ops);
CREATE INDEX reference_images_model_id ON reference_images (model_id);

-- Cases -----------------------------------------------------------------------------------------

-- Lifecycle (enforced by cases_check_transition below):
--   received -> embedding -> ready -> approved | rejected -> notified
--   received | embedding -> failed -> received (retry);  embedding -> received (lease released)
--   ready -> embedding (re-embed under a new model)
CREATE TABLE cases (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id  text NOT NULL UNIQUE CHECK (btrim(submission_id) <> ''),
    form_id        text,
    source         text NOT NULL DEFAULT 'jotform' CHECK (source IN ('jotform', 'json', 'upload')),
    submitter_name text,
    submitter_email text,
    client_id      text,
    raw_payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'received'
                   CHECK (status IN ('received', 'embedding', 'ready', 'approved', 'rejected',
                                     'notified', 'failed')),
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    notified_at    timestamptz
);
CREATE INDEX cases_status_created_at ON cases (status, created_at DESC);

ALTER TABLE reference_images
    ADD CONSTRAINT reference_images_source_case_fk FOREIGN KEY (source_case_id) REFERENCES cases (id)
    ON DELETE SET NULL;

CREATE FUNCTION cases_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) NOT IN (
        ('received', 'embedding'), ('received', 'failed'),
        ('embedding', 'ready'), ('embedding', 'failed'), ('embedding', 'received'),
        ('ready', 'approved'), ('ready', 'rejected'), ('ready', 'embedding'),
        ('approved', 'notified'), ('rejected', 'notified'),
        ('failed', 'received')
    ) THEN
        RAISE EXCEPTION 'case % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER cases_status_transition BEFORE UPDATE OF status ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_check_transition();

CREATE TABLE case_images (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id       bigint NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    position      integer NOT NULL CHECK (position >= 0),
    source_url    text,            -- where intake fetched it from, if anywhere
    storage_key   text,            -- NULL only when the image could not be stored (status failed)
    sha256        text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes    bigint CHECK (size_bytes >= 0),
    content_type  text,
    width         integer,
    height        integer,
    status        text NOT NULL DEFAULT 'stored' CHECK (status IN ('stored', 'embedded', 'failed')),
    error         text,
    model_id      text,
    embedding     vector(512),
    created_at    timestamptz NOT NULL DEFAULT now(),
    embedded_at   timestamptz,
    UNIQUE (case_id, position),
    CHECK (status = 'failed' OR storage_key IS NOT NULL),
    CHECK ((embedding IS NULL) = (model_id IS NULL))
);

-- Top-k candidates per case image and model; rank 1 is the most similar implant system.
CREATE TABLE match_results (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_image_id      bigint NOT NULL REFERENCES case_images (id) ON DELETE CASCADE,
    model_id           text NOT NULL,
    rank               smallint NOT NULL CHECK (rank >= 1),
    implant_id         bigint NOT NULL REFERENCES implants (id),
    reference_image_id bigint REFERENCES reference_images (id) ON DELETE SET NULL,
    similarity         real NOT NULL CHECK (similarity BETWEEN -1.0001 AND 1.0001),
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_image_id, model_id, rank),
    UNIQUE (case_image_id, model_id, implant_id)
);

-- Review ----------------------------------------------------------------------------------------

-- UNIQUE (case_id): a case is decided once.
CREATE TABLE review_decisions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     bigint NOT NULL UNIQUE REFERENCES cases (id) ON DELETE CASCADE,
    decision    text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    implant_id  bigint REFERENCES implants (id),
    chosen_rank smallint CHECK (chosen_rank >= 1),   -- NULL when the reviewer overrode the candidates
    reviewer    text NOT NULL CHECK (btrim(reviewer) <> ''),
    reason      text,
    note        text,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((decision = 'approved') = (implant_id IS NOT NULL)),
    CHECK (decision = 'approved' OR btrim(coalesce(reason, '')) <> '')
);

CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,        -- reviewer name, or 'system:<component>'
    action   text NOT NULL,
    case_id  bigint REFERENCES cases (id) ON DELETE SET NULL,
    details  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_case_id ON audit_log (case_id, at);

-- Durable jobs ----------------------------------------------------------------------------------

-- Claimed with FOR UPDATE SKIP LOCKED. A job is due when pending and run_after has passed, or when
-- running and its lease expired (its worker died). One live job per (kind, case).
CREATE TABLE jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('embed', 'notify')),
    case_id       bigint REFERENCES cases (id) ON DELETE CASCADE,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after     timestamptz NOT NULL DEFAULT now(),
    lease_owner   text,
    leased_until  timestamptz,
    last_error    text,
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CHECK (status <> 'running' OR leased_until IS NOT NULL)
);
CREATE INDEX jobs_due ON jobs (kind, run_after) WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX jobs_one_live_per_case ON jobs (kind, case_id) WHERE status IN ('pending', 'running');
