-- cloudmanager catalog schema (SQLite). Version 6: see PRAGMA user_version below.
--
-- Every file is known by its SHA-256.  `files` holds what a dump carries (name,
-- size, time) and the local cache state; `uploads` holds, per host, the URL a
-- copy got there or the error met.  Running totals (cached bytes and files,
-- pinned files, files) and the LRU clock live in the one-row table `state`, and
-- `holdings` counts the files each set of hosts holds; triggers keep them, so
-- they change in the same transaction as the rows they count.
--
-- This file is applied to a new catalog by `cm_setup_db` and by CloudManager;
-- an older catalog is brought up to date by the steps in cloudmanager/catalog/sqlite.py.

CREATE TABLE IF NOT EXISTS files (
    hash     TEXT PRIMARY KEY
             CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
    name     TEXT NOT NULL,
    size     INTEGER NOT NULL CHECK (size >= 0),
    datetime INTEGER NOT NULL,               -- Unix time the file was first known
    cached   INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1)),
    pinned   INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    access   INTEGER NOT NULL DEFAULT 0,     -- LRU clock value of the last access
    copies   INTEGER NOT NULL DEFAULT 0,     -- copies held: whole ones, plus 1 when >= K shares are
    seq      INTEGER NOT NULL DEFAULT 0,     -- change sequence of the dumped record (triggers keep both)
    spread_k INTEGER,                        -- spread as N erasure-coded shares, K of which rebuild it
    spread_n INTEGER,
    holders  TEXT NOT NULL DEFAULT '[]',     -- the hosts holding a whole copy: a JSON array, in host order
    CHECK ((spread_k IS NULL) = (spread_n IS NULL) AND (spread_k IS NULL OR spread_k BETWEEN 1 AND spread_n))
) WITHOUT ROWID;

-- Eviction walks this index in LRU order: only cached, unpinned files that at
-- least one host holds are candidates, so the walk never meets a file it must skip.
CREATE INDEX IF NOT EXISTS files_lru ON files (access)
    WHERE cached = 1 AND pinned = 0 AND copies > 0;
CREATE INDEX IF NOT EXISTS files_seq ON files (seq);

CREATE TABLE IF NOT EXISTS uploads (
    hash     TEXT NOT NULL REFERENCES files (hash) ON DELETE CASCADE,
    host     TEXT NOT NULL,
    url      TEXT,                           -- the locator, when the host took it
    error    TEXT,                           -- the error met, when it did not
    time     INTEGER NOT NULL,
    encrypted INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),  -- the host holds sealed bytes
    PRIMARY KEY (hash, host),
    CHECK ((url IS NULL) <> (error IS NULL))
) WITHOUT ROWID;

-- The erasure-coded shares of spread files: which host holds share number idx.
CREATE TABLE IF NOT EXISTS shares (
    hash     TEXT NOT NULL REFERENCES files (hash) ON DELETE CASCADE,
    idx      INTEGER NOT NULL CHECK (idx >= 0),
    host     TEXT NOT NULL,
    url      TEXT,
    error    TEXT,
    digest   TEXT NOT NULL,                  -- SHA-256 of the share's bytes
    size     INTEGER NOT NULL,
    encrypted INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),  -- cut from the sealed file
    time     INTEGER NOT NULL,
    PRIMARY KEY (hash, idx),
    CHECK ((url IS NULL) <> (error IS NULL))
) WITHOUT ROWID;

-- Per host: how it has behaved lately (downloads try the healthiest first).
CREATE TABLE IF NOT EXISTS hosts (
    name       TEXT PRIMARY KEY,
    failures   INTEGER NOT NULL DEFAULT 0,   -- failures since the last success
    last_ok    INTEGER,
    last_error TEXT,
    last_error_time INTEGER
);

-- Bytes moved per host and month ("YYYY-MM"): the transfer meter.
CREATE TABLE IF NOT EXISTS transfers (
    month    TEXT NOT NULL,
    host     TEXT NOT NULL,
    sent     INTEGER NOT NULL DEFAULT 0,
    fetched  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (month, host)
);

CREATE TABLE IF NOT EXISTS state (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    cached_bytes INTEGER NOT NULL DEFAULT 0,
    cached_files INTEGER NOT NULL DEFAULT 0,
    clock        INTEGER NOT NULL DEFAULT 0, -- LRU clock: exact order within a tick
    seq          INTEGER NOT NULL DEFAULT 0, -- last change sequence number
    bulk         INTEGER NOT NULL DEFAULT 0, -- 1 inside a bulk merge: it keeps its counts itself
    cache        TEXT,                       -- the cache folder whose state this catalog keeps (one per catalog)
    files        INTEGER NOT NULL DEFAULT 0, -- files known
    pinned_files INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO state (id) VALUES (0);

-- How many files each set of hosts holds whole copies of (files.holders, the empty
-- set included), so that counts() finds the files some hosts lack without reading
-- the files: one row per set in use (a handful: every host, all but a failing one...).
CREATE TABLE IF NOT EXISTS holdings (
    holders  TEXT PRIMARY KEY,
    files    INTEGER NOT NULL
) WITHOUT ROWID;

-- Other nodes this one syncs its catalog with over HTTP: the last change
-- sequence number pulled from each (theirs) and pushed to each (ours).
CREATE TABLE IF NOT EXISTS peers (
    url      TEXT PRIMARY KEY,
    pulled   INTEGER NOT NULL DEFAULT 0,
    pushed   INTEGER NOT NULL DEFAULT 0
);

-- Running totals of the cache and its pins, in the same transaction as the rows.
CREATE TRIGGER IF NOT EXISTS files_usage_insert AFTER INSERT ON files
WHEN NEW.cached = 1 OR NEW.pinned = 1
BEGIN
    UPDATE state SET cached_bytes = cached_bytes + NEW.cached * NEW.size,
                     cached_files = cached_files + NEW.cached,
                     pinned_files = pinned_files + NEW.pinned;
END;

CREATE TRIGGER IF NOT EXISTS files_usage_update AFTER UPDATE OF cached, pinned, size ON files
WHEN OLD.cached <> NEW.cached OR OLD.pinned <> NEW.pinned OR OLD.size <> NEW.size
BEGIN
    UPDATE state SET cached_bytes = cached_bytes + NEW.cached * NEW.size - OLD.cached * OLD.size,
                     cached_files = cached_files + NEW.cached - OLD.cached,
                     pinned_files = pinned_files + NEW.pinned - OLD.pinned;
END;

CREATE TRIGGER IF NOT EXISTS files_usage_delete AFTER DELETE ON files
WHEN OLD.cached = 1 OR OLD.pinned = 1
BEGIN
    UPDATE state SET cached_bytes = cached_bytes - OLD.cached * OLD.size,
                     cached_files = cached_files - OLD.cached,
                     pinned_files = pinned_files - OLD.pinned;
END;

-- The count of files, and the holdings of each file's set of holders.  (These stand
-- aside during a bulk merge too, which counts what it adds and changes itself.)
CREATE TRIGGER IF NOT EXISTS files_count_insert AFTER INSERT ON files
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET files = files + 1;
    INSERT INTO holdings (holders, files) VALUES (NEW.holders, 1)
        ON CONFLICT (holders) DO UPDATE SET files = files + 1;
END;

CREATE TRIGGER IF NOT EXISTS files_count_update AFTER UPDATE OF holders ON files
WHEN OLD.holders <> NEW.holders AND (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE holdings SET files = files - 1 WHERE holders = OLD.holders;
    DELETE FROM holdings WHERE holders = OLD.holders AND files = 0;
    INSERT INTO holdings (holders, files) VALUES (NEW.holders, 1)
        ON CONFLICT (holders) DO UPDATE SET files = files + 1;
END;

CREATE TRIGGER IF NOT EXISTS files_count_delete AFTER DELETE ON files
BEGIN
    UPDATE state SET files = files - 1;
    UPDATE holdings SET files = files - 1 WHERE holders = OLD.holders;
    DELETE FROM holdings WHERE holders = OLD.holders AND files = 0;
END;

-- A new record gets the next change sequence number.  (These triggers stand aside
-- during a bulk merge, which sets copies and seq for all its rows at once.)
CREATE TRIGGER IF NOT EXISTS files_seq_insert AFTER INSERT ON files
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET seq = (SELECT seq FROM state) WHERE hash = NEW.hash;
END;

-- Host copies: the count of URLs per file, the hosts holding them (a set read in
-- the host order of the uploads key), and a new change sequence number.
CREATE TRIGGER IF NOT EXISTS uploads_insert AFTER INSERT ON uploads
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = copies + (NEW.url IS NOT NULL),
                     holders = (SELECT json_group_array(host) FROM (
                                    SELECT host FROM uploads WHERE hash = NEW.hash AND url IS NOT NULL
                                     ORDER BY host)),
                     seq = (SELECT seq FROM state)
     WHERE hash = NEW.hash;
END;

CREATE TRIGGER IF NOT EXISTS uploads_update AFTER UPDATE OF url, error ON uploads
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = copies + (NEW.url IS NOT NULL) - (OLD.url IS NOT NULL),
                     holders = (SELECT json_group_array(host) FROM (
                                    SELECT host FROM uploads WHERE hash = NEW.hash AND url IS NOT NULL
                                     ORDER BY host)),
                     seq = (SELECT seq FROM state)
     WHERE hash = NEW.hash;
END;

CREATE TRIGGER IF NOT EXISTS uploads_delete AFTER DELETE ON uploads
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = copies - (OLD.url IS NOT NULL),
                     holders = (SELECT json_group_array(host) FROM (
                                    SELECT host FROM uploads WHERE hash = OLD.hash AND url IS NOT NULL
                                     ORDER BY host)),
                     seq = (SELECT seq FROM state)
     WHERE hash = OLD.hash;
END;

-- Shares: a spread file counts one copy while at least K of its shares are held.
CREATE TRIGGER IF NOT EXISTS shares_insert AFTER INSERT ON shares
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = (SELECT count(url) FROM uploads WHERE hash = NEW.hash)
                            + coalesce((SELECT count(url) FROM shares WHERE hash = NEW.hash) >= spread_k, 0),
                     seq = (SELECT seq FROM state)
     WHERE hash = NEW.hash;
END;

CREATE TRIGGER IF NOT EXISTS shares_update AFTER UPDATE OF url, error ON shares
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = (SELECT count(url) FROM uploads WHERE hash = NEW.hash)
                            + coalesce((SELECT count(url) FROM shares WHERE hash = NEW.hash) >= spread_k, 0),
                     seq = (SELECT seq FROM state)
     WHERE hash = NEW.hash;
END;

CREATE TRIGGER IF NOT EXISTS shares_delete AFTER DELETE ON shares
WHEN (SELECT bulk FROM state WHERE id = 0) = 0
BEGIN
    UPDATE state SET seq = seq + 1;
    UPDATE files SET copies = (SELECT count(url) FROM uploads WHERE hash = OLD.hash)
                            + coalesce((SELECT count(url) FROM shares WHERE hash = OLD.hash) >= spread_k, 0),
                     seq = (SELECT seq FROM state)
     WHERE hash = OLD.hash;
END;

PRAGMA user_version = 6;
