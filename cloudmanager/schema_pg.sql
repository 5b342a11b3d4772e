-- cloudmanager catalog schema (PostgreSQL 14 or later), shared by a fleet of nodes.
-- Version 5 (the logical schema of schema.sql's version 6; SQLite's version 5, the
-- cache folder a catalog keeps, has no counterpart here), kept in the table
-- schema_version by cloudmanager/catalog/postgres.py, which also holds the steps
-- that bring an older catalog up to date.
--
-- What a dump carries is shared by every node: `files` (name, size, time, the
-- copies held and the change sequence number), `uploads` (per host, the URL a
-- copy got there or the error met), `shares`, `hosts` and `transfers`.  What a
-- node's own cache holds is per node: `cache` (one row per node and file it
-- caches or pins), the running totals and LRU clock in `node_state`, the sync
-- cursors in `peers`.
--
-- Totals and counters move in the same transaction as the rows, kept by the
-- PL/pgSQL triggers below:
--   * cache rows -> node_state.cached_bytes / cached_files / pinned_files of their node;
--   * a new file, and every change to uploads or shares -> the next change
--     sequence number (catalog_state.seq, whose row stays locked until the
--     transaction ends, so numbers are committed in order and a reader paging
--     by seq never skips one) and files.copies;
--   * a file in or out, and every change to the hosts holding it (files.holders)
--     -> catalog_state.files and `holdings`, the files each set of hosts holds.
-- A bulk merge sets `cloudmanager.bulk` to 'on' for its transaction: the
-- sequence and count triggers then stand aside, and it keeps those itself.
-- The triggers name no new column in their definitions (only in the functions'
-- bodies, read when they run), so that a migration's "@schema" step may run
-- before the step that adds the column.
--
-- Every statement is idempotent: this file is applied to a new catalog, and as
-- the "@schema" step of a migration, under an advisory lock.  Keys are in the
-- "C" collation: byte order (as in SQLite) and the fastest comparisons.

CREATE TABLE IF NOT EXISTS schema_version (
    id       integer PRIMARY KEY CHECK (id = 0),
    version  integer NOT NULL
);

CREATE TABLE IF NOT EXISTS catalog_state (
    id       integer PRIMARY KEY CHECK (id = 0),
    seq      bigint NOT NULL DEFAULT 0,      -- last change sequence number given
    files    bigint NOT NULL DEFAULT 0       -- files known
);
INSERT INTO catalog_state (id) VALUES (0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS files (
    hash     text COLLATE "C" PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    name     text COLLATE "C" NOT NULL,
    size     bigint NOT NULL CHECK (size >= 0),
    datetime bigint NOT NULL,                -- Unix time the file was first known
    copies   integer NOT NULL DEFAULT 0,     -- copies held: whole ones, plus 1 when >= K shares are
    seq      bigint NOT NULL DEFAULT 0,      -- change sequence number of the record
    spread_k integer,                        -- spread as N erasure-coded shares, K of which rebuild it
    spread_n integer,
    holders  text[] COLLATE "C" NOT NULL DEFAULT '{}',  -- the hosts holding a whole copy, in order
    CHECK ((spread_k IS NULL) = (spread_n IS NULL) AND (spread_k IS NULL OR spread_k BETWEEN 1 AND spread_n))
);
CREATE INDEX IF NOT EXISTS files_seq ON files (seq);

CREATE TABLE IF NOT EXISTS uploads (
    hash     text COLLATE "C" NOT NULL REFERENCES files (hash) ON DELETE CASCADE,
    host     text COLLATE "C" NOT NULL,
    url      text,                           -- the locator, when the host took it
    error    text,                           -- the error met, when it did not
    time     bigint NOT NULL,
    encrypted boolean NOT NULL DEFAULT false, -- the host holds sealed bytes
    PRIMARY KEY (hash, host),
    CHECK ((url IS NULL) <> (error IS NULL))
);
CREATE INDEX IF NOT EXISTS uploads_host ON uploads (host, time);

-- The erasure-coded shares of spread files: which host holds share number idx.
CREATE TABLE IF NOT EXISTS shares (
    hash     text COLLATE "C" NOT NULL REFERENCES files (hash) ON DELETE CASCADE,
    idx      integer NOT NULL CHECK (idx >= 0),
    host     text COLLATE "C" NOT NULL,
    url      text,
    error    text,
    digest   text NOT NULL,                  -- SHA-256 of the share's bytes
    size     bigint NOT NULL,
    encrypted boolean NOT NULL DEFAULT false, -- cut from the sealed file
    time     bigint NOT NULL,
    PRIMARY KEY (hash, idx),
    CHECK ((url IS NULL) <> (error IS NULL))
);

-- Per host: how it has behaved lately (downloads try the healthiest first).
CREATE TABLE IF NOT EXISTS hosts (
    name       text COLLATE "C" PRIMARY KEY,
    failures   integer NOT NULL DEFAULT 0,   -- failures since the last success
    last_ok    bigint,
    last_error text,
    last_error_time bigint
);

-- Bytes moved per host and month ("YYYY-MM"): the transfer meter.
CREATE TABLE IF NOT EXISTS transfers (
    month    text COLLATE "C" NOT NULL,
    host     text COLLATE "C" NOT NULL,
    sent     bigint NOT NULL DEFAULT 0,
    fetched  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (month, host)
);

-- Per node: the running totals of its cache and its LRU clock.  A write to a
-- node's cache state locks this row first, so that two processes of one node
-- never over-fill its cache.
CREATE TABLE IF NOT EXISTS node_state (
    node         text COLLATE "C" PRIMARY KEY,
    cached_bytes bigint NOT NULL DEFAULT 0,
    cached_files bigint NOT NULL DEFAULT 0,
    clock        bigint NOT NULL DEFAULT 0,  -- LRU clock: exact order within a tick
    pinned_files bigint NOT NULL DEFAULT 0
);

-- Per node and file: cached there, pinned there, its last access there.  `size`
-- is the file's (sizes never change), kept here so the totals need no join.
CREATE TABLE IF NOT EXISTS cache (
    node     text COLLATE "C" NOT NULL REFERENCES node_state (node) ON DELETE CASCADE,
    hash     text COLLATE "C" NOT NULL REFERENCES files (hash) ON DELETE CASCADE,
    size     bigint NOT NULL,
    cached   boolean NOT NULL DEFAULT false,
    pinned   boolean NOT NULL DEFAULT false,
    access   bigint NOT NULL DEFAULT 0,      -- LRU clock value of the last access
    PRIMARY KEY (node, hash)
);
-- Eviction walks this index in LRU order (and skips files no host holds).
CREATE INDEX IF NOT EXISTS cache_lru ON cache (node, access) WHERE cached AND NOT pinned;
CREATE INDEX IF NOT EXISTS cache_hash ON cache (hash);

-- How many files each set of hosts holds whole copies of (files.holders, the empty
-- set included), so that counts() finds the files some hosts lack without reading
-- the files: one row per set in use (a handful: every host, all but a failing one...).
CREATE TABLE IF NOT EXISTS holdings (
    holders  text[] COLLATE "C" PRIMARY KEY,
    files    bigint NOT NULL
);

-- Other nodes each node syncs its catalog with over HTTP: the last change
-- sequence number pulled from each (theirs) and pushed to each (ours).
CREATE TABLE IF NOT EXISTS peers (
    node     text COLLATE "C" NOT NULL REFERENCES node_state (node) ON DELETE CASCADE,
    url      text COLLATE "C" NOT NULL,
    pulled   bigint NOT NULL DEFAULT 0,
    pushed   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (node, url)
);

-- The next change sequence number (the row stays locked until commit).
CREATE OR REPLACE FUNCTION cm_next_seq() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    UPDATE catalog_state SET seq = seq + 1 WHERE id = 0 RETURNING seq
$$;

-- True inside a bulk merge (which keeps copies and seq itself).
CREATE OR REPLACE FUNCTION cm_bulk() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('cloudmanager.bulk', true), '') = 'on'
$$;

-- Running totals of each node's cache and pins, in the same transaction as the rows.
CREATE OR REPLACE FUNCTION cm_cache_usage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_bytes bigint := 0;
    d_files bigint := 0;
    d_pinned bigint := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        d_bytes := d_bytes - OLD.cached::int * OLD.size;
        d_files := d_files - OLD.cached::int;
        d_pinned := d_pinned - OLD.pinned::int;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        d_bytes := d_bytes + NEW.cached::int * NEW.size;
        d_files := d_files + NEW.cached::int;
        d_pinned := d_pinned + NEW.pinned::int;
    END IF;
    UPDATE node_state SET cached_bytes = cached_bytes + d_bytes, cached_files = cached_files + d_files,
                          pinned_files = pinned_files + d_pinned
     WHERE node = CASE WHEN TG_OP = 'DELETE' THEN OLD.node ELSE NEW.node END;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER cache_usage_insert AFTER INSERT ON cache
    FOR EACH ROW WHEN (NEW.cached OR NEW.pinned) EXECUTE FUNCTION cm_cache_usage();
CREATE OR REPLACE TRIGGER cache_usage_update AFTER UPDATE OF cached, pinned, size ON cache
    FOR EACH ROW WHEN (OLD.cached <> NEW.cached OR OLD.pinned <> NEW.pinned OR OLD.size <> NEW.size)
    EXECUTE FUNCTION cm_cache_usage();
CREATE OR REPLACE TRIGGER cache_usage_delete AFTER DELETE ON cache
    FOR EACH ROW WHEN (OLD.cached OR OLD.pinned) EXECUTE FUNCTION cm_cache_usage();

-- One file more (delta 1) or less (-1) held by exactly the hosts `held`.
CREATE OR REPLACE FUNCTION cm_hold(held text[], delta integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO holdings AS k (holders, files) VALUES (held, delta)
        ON CONFLICT (holders) DO UPDATE SET files = k.files + excluded.files;
    DELETE FROM holdings WHERE holders = held AND files = 0;
$$;

-- A new record gets the next change sequence number, and is counted.
CREATE OR REPLACE FUNCTION cm_files_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH counted AS (UPDATE catalog_state SET seq = seq + 1, files = files + 1 WHERE id = 0 RETURNING seq)
    UPDATE files SET seq = counted.seq FROM counted WHERE hash = NEW.hash;
    PERFORM cm_hold(NEW.holders, 1);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER files_seq_insert AFTER INSERT ON files
    FOR EACH ROW WHEN (NOT cm_bulk()) EXECUTE FUNCTION cm_files_insert();

-- A record gone is counted out (never within a bulk merge, which only adds).
CREATE OR REPLACE FUNCTION cm_files_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_state SET files = files - 1 WHERE id = 0;
    PERFORM cm_hold(OLD.holders, -1);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER files_count_delete AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION cm_files_delete();

-- Host copies and shares: the copies a file has, the hosts holding it (and their
-- holdings), and a new change sequence number.  Nothing for a file deleted with them.
CREATE OR REPLACE FUNCTION cm_copies_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text := CASE WHEN TG_OP = 'DELETE' THEN OLD.hash ELSE NEW.hash END;
    was text[];
    held text[];
BEGIN
    SELECT holders INTO was FROM files WHERE hash = target FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    held := array(SELECT u.host FROM uploads u WHERE u.hash = target AND u.url IS NOT NULL ORDER BY u.host);
    UPDATE files f
       SET copies = cardinality(held)
                  + coalesce(((SELECT count(s.url) FROM shares s WHERE s.hash = target) >= f.spread_k)::int, 0),
           holders = held,
           seq = cm_next_seq()
     WHERE f.hash = target;
    IF was <> held THEN
        PERFORM cm_hold(was, -1);
        PERFORM cm_hold(held, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER uploads_change AFTER INSERT OR DELETE OR UPDATE OF url, error ON uploads
    FOR EACH ROW WHEN (NOT cm_bulk()) EXECUTE FUNCTION cm_copies_change();
CREATE OR REPLACE TRIGGER shares_change AFTER INSERT OR DELETE OR UPDATE OF url, error ON shares
    FOR EACH ROW WHEN (NOT cm_bulk()) EXECUTE FUNCTION cm_copies_change();
