CREATE TABLE retention (
    invocation_id text COLLATE "C" PRIMARY KEY REFERENCES invocations ON DELETE CASCADE,
    removed_at_ms bigint NOT NULL,
    freed_bytes   bigint NOT NULL,
    proof_file    text
);
