-- One HNSW index per model id instead of one over every model's references.
--
-- With one shared graph, a query for a model that owns a minority of the rows (a retrained model whose
-- references are being re-embedded) gets hnsw.ef_search nearest rows of any model and filters afterwards
-- (pgvector 0.6 has no iterative scan), so it comes back with too few implants or misses neighbours. A
-- partial index `WHERE model_id = '<id>'` holds one model's graph; the planner uses it for a query whose
-- `model_id = <same value>` it can prove, which a statement planned with its parameters (psycopg's default)
-- always is. `raiox.repository.catalog.ensure_model_index` creates the same index (same name: md5 of the
-- model id; same definition) CONCURRENTLY when a model id gets references: catalog import, re-embedding,
-- the first reference learned from an approval. A model without its index yet is matched by an exact
-- scan (right answers, slower), never through another model's graph.
--
-- On a large production table, run this in a quiet window: building the indexes holds a write lock.

DO $$
DECLARE
    model text;
BEGIN
    -- The ids first: CREATE INDEX refuses a table that an open loop over it is still reading.
    FOREACH model IN ARRAY ARRAY(SELECT DISTINCT model_id FROM reference_images) LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON reference_images USING hnsw (embedding vector_cosine_ops) '
                       'WITH (m = 32, ef_construction = 128) WHERE model_id = %L',
                       'reference_images_hnsw_' || md5(model), model);
    END LOOP;
END
$$;

DROP INDEX IF EXISTS reference_images_embedding_hnsw;

-- Embeddings (2 KiB each) inline in the table instead of TOAST: an exact scan reads ~3x faster, and the
-- table's size lets pgvector build an index with parallel workers (it sizes them from the heap, which was
-- only pointers). Rows written before stay out of line until the table is rewritten; only speed differs.
ALTER TABLE reference_images ALTER COLUMN embedding SET STORAGE PLAIN;
