-- A denser HNSW graph for reference_images: measured with `raiox bench match` on 100k references of 512
-- dimensions, m=32 / ef_construction=128 reached recall@3 1.0 at ef_search 64 where the defaults
-- (m=16 / ef_construction=64) gave 0.96, at a similar query latency; building takes about 4x longer.
-- On a large production table, run this in a quiet window: the build holds a write lock on the table.

DROP INDEX IF EXISTS reference_images_embedding_hnsw;
CREATE INDEX reference_images_embedding_hnsw ON reference_images
    USING hnsw (embedding vector_cosine_ops) WITH (m = 32, ef_construction = 128);
