-- A case whose intake failed (no X-ray could be fetched or read) can be rejected with a message for the clinic,
-- so it still gets an answer: failed -> rejected, then notified through the same delivery as any decision.
-- Only the lifecycle trigger's list of allowed transitions changes; everything else is 0001's.

CREATE OR REPLACE FUNCTION cases_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) NOT IN (
        ('received', 'embedding'), ('received', 'failed'),
        ('embedding', 'ready'), ('embedding', 'failed'), ('embedding', 'received'),
        ('ready', 'approved'), ('ready', 'rejected'), ('ready', 'embedding'),
        ('approved', 'notified'), ('rejected', 'notified'),
        ('failed', 'received'), ('failed', 'rejected')
    ) THEN
        RAISE EXCEPTION 'case % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
