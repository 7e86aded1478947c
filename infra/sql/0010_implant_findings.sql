-- Identification by shape: every implant found on an X-ray is kept with its canonical crop (a private object),
-- what was measured and read of it, and its vector, and is matched on its own; match results say which
-- implant of the X-ray they rank. References keep their crop and measurements too, so a reviewer sees both.

CREATE TABLE image_findings (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_image_id bigint NOT NULL REFERENCES case_images (id) ON DELETE CASCADE,
    model_id      text NOT NULL,
    position      smallint NOT NULL CHECK (position >= 0),  -- 0: the most implant-like on the X-ray
    found         boolean NOT NULL,                          -- false: no implant stood out; the whole film
    crop_key      text,
    summary       jsonb NOT NULL DEFAULT '{}'::jsonb,        -- where it lies, what was measured and read
    embedding     vector(512) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_image_id, model_id, position)
);

ALTER TABLE match_results
    ADD COLUMN finding_position smallint NOT NULL DEFAULT 0 CHECK (finding_position >= 0),
    DROP CONSTRAINT match_results_case_image_id_model_id_rank_key,
    DROP CONSTRAINT match_results_case_image_id_model_id_implant_id_key,
    ADD CONSTRAINT match_results_rank_per_finding UNIQUE (case_image_id, model_id, finding_position, rank),
    ADD CONSTRAINT match_results_implant_per_finding UNIQUE (case_image_id, model_id, finding_position, implant_id);

ALTER TABLE reference_images
    ADD COLUMN crop_key text,
    ADD COLUMN summary  jsonb;

-- A system entered from its manufacturer's spec sheet keeps the sheet (body, thread, pitch, apex, collar,
-- connection, sizes); its reference films are rendered from it (reference_images.source = 'rendered').
ALTER TABLE implants ADD COLUMN spec jsonb;
