CREATE TABLE invocations (
    invocation_id       text COLLATE "C" PRIMARY KEY,
    build_id            text,
    source              text NOT NULL,
    tenant              text,
    instance            text,
    created_at_ms       bigint NOT NULL,
    last_seq            bigint NOT NULL DEFAULT 0,
    event_count         bigint NOT NULL DEFAULT 0,
    record_count        bigint NOT NULL DEFAULT 0,
    saw_build_finished  boolean NOT NULL DEFAULT false,
    saw_last_message    boolean NOT NULL DEFAULT false,
    saw_stream_finished boolean NOT NULL DEFAULT false,
    finalized           boolean NOT NULL DEFAULT false,
    complete            boolean NOT NULL DEFAULT false,
    incomplete_reason   text,
    bytes               bigint NOT NULL DEFAULT 0,
    journal_bytes       bigint NOT NULL DEFAULT 0,
    summary             text
);
CREATE INDEX inv_created ON invocations (created_at_ms DESC, invocation_id DESC);
CREATE INDEX inv_tenant ON invocations (tenant, created_at_ms DESC, invocation_id DESC);
CREATE INDEX inv_build ON invocations (build_id);
CREATE TABLE frames (
    invocation_id text COLLATE "C" NOT NULL REFERENCES invocations ON DELETE CASCADE,
    first_seq     bigint NOT NULL,
    records       integer NOT NULL,
    data          bytea NOT NULL,
    PRIMARY KEY (invocation_id, first_seq)
);
-- Frames are zstd-compressed already: store them out of line without recompressing.
ALTER TABLE frames ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE lifecycle (
    build_id      text NOT NULL,
    invocation_id text COLLATE "C" NOT NULL,
    kind          text NOT NULL,
    attempt       bigint,
    status        text,
    at_ms         bigint NOT NULL,
    PRIMARY KEY (build_id, invocation_id, kind)
);
