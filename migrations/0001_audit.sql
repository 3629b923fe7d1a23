-- Audit log of the Worker (D1). One row per event; never a code, hash, key or pepper.
CREATE TABLE IF NOT EXISTS audit_events (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  workspace_id TEXT    NOT NULL,
  time_ms      INTEGER NOT NULL,
  event        TEXT    NOT NULL,
  session_id   TEXT    NOT NULL,
  purpose      TEXT    NOT NULL,
  app          TEXT,
  dest         TEXT    NOT NULL,
  outcome      TEXT    NOT NULL,
  status       TEXT,
  test         INTEGER NOT NULL DEFAULT 0
);
-- Every query is scoped to one workspace and pages newest first by seq.
CREATE INDEX IF NOT EXISTS audit_ws_seq ON audit_events (workspace_id, seq DESC);
CREATE INDEX IF NOT EXISTS audit_ws_session ON audit_events (workspace_id, session_id, seq DESC);
