-- A catalog as schema version 1 made it (before the change sequence): used to
-- test that an older catalog is migrated on open.
CREATE TABLE files (
    hash TEXT PRIMARY KEY CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
    name TEXT NOT NULL, size INTEGER NOT NULL CHECK (size >= 0), datetime INTEGER NOT NULL,
    cached INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1)),
    pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    access INTEGER NOT NULL DEFAULT 0, copies INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX files_lru ON files (access) WHERE cached = 1 AND pinned = 0 AND copies > 0;
CREATE TABLE uploads (
    hash TEXT NOT NULL REFERENCES files (hash) ON DELETE CASCADE, host TEXT NOT NULL,
    url TEXT, error TEXT, time INTEGER NOT NULL, PRIMARY KEY (hash, host),
    CHECK ((url IS NULL) <> (error IS NULL))
) WITHOUT ROWID;
CREATE TABLE hosts (name TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0, last_ok INTEGER,
    last_error TEXT, last_error_time INTEGER);
CREATE TABLE transfers (month TEXT NOT NULL, host TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0,
    fetched INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (month, host));
CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 0), cached_bytes INTEGER NOT NULL DEFAULT 0,
    cached_files INTEGER NOT NULL DEFAULT 0, clock INTEGER NOT NULL DEFAULT 0);
INSERT INTO state (id) VALUES (0);
CREATE TRIGGER files_usage_insert AFTER INSERT ON files WHEN NEW.cached = 1 BEGIN
    UPDATE state SET cached_bytes = cached_bytes + NEW.size, cached_files = cached_files + 1; END;
CREATE TRIGGER files_usage_update AFTER UPDATE OF cached, size ON files
WHEN OLD.cached <> NEW.cached OR OLD.size <> NEW.size BEGIN
    UPDATE state SET cached_bytes = cached_bytes + NEW.cached * NEW.size - OLD.cached * OLD.size,
                     cached_files = cached_files + NEW.cached - OLD.cached; END;
CREATE TRIGGER files_usage_delete AFTER DELETE ON files WHEN OLD.cached = 1 BEGIN
    UPDATE state SET cached_bytes = cached_bytes - OLD.size, cached_files = cached_files - 1; END;
CREATE TRIGGER uploads_insert AFTER INSERT ON uploads BEGIN
    UPDATE files SET copies = copies + (NEW.url IS NOT NULL) WHERE hash = NEW.hash; END;
CREATE TRIGGER uploads_update AFTER UPDATE OF url, error ON uploads BEGIN
    UPDATE files SET copies = copies + (NEW.url IS NOT NULL) - (OLD.url IS NOT NULL) WHERE hash = NEW.hash; END;
CREATE TRIGGER uploads_delete AFTER DELETE ON uploads BEGIN
    UPDATE files SET copies = copies - (OLD.url IS NOT NULL) WHERE hash = OLD.hash; END;
-- two files, one of them on a host
INSERT INTO files (hash, name, size, datetime) VALUES
    ('1111111111111111111111111111111111111111111111111111111111111111', 'one.txt', 10, 1391212800),
    ('2222222222222222222222222222222222222222222222222222222222222222', 'two.txt', 20, 1391212900);
INSERT INTO uploads VALUES
    ('1111111111111111111111111111111111111111111111111111111111111111', 'vault', 'file:///v/11/11/x', NULL, 1391212800);
PRAGMA user_version = 1;
