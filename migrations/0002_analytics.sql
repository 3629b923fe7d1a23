-- Analytics of the Worker (D1), SPEC §3 "Analytics". Counts only; never a code, hash, key,
-- pepper or destination. The core (otpkit_core::analytics) decides every increment.

-- Counters per bucket: the UTC day the session was created (days since 1970-01-01), channel,
-- purpose and app ('' when the request named none). Kept 90 days.
CREATE TABLE IF NOT EXISTS analytics_daily (
  workspace_id    TEXT    NOT NULL,
  day             INTEGER NOT NULL,
  channel         TEXT    NOT NULL,
  purpose         TEXT    NOT NULL,
  app             TEXT    NOT NULL,
  sent            INTEGER NOT NULL DEFAULT 0,
  reused          INTEGER NOT NULL DEFAULT 0,
  delivery_failed INTEGER NOT NULL DEFAULT 0,
  verified        INTEGER NOT NULL DEFAULT 0,
  failed          INTEGER NOT NULL DEFAULT 0,
  sms_segments    INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (workspace_id, day, channel, purpose, app)
) WITHOUT ROWID;

-- Sessions sent and not yet verified or locked. A session still here after its expiry has
-- expired; the row is deleted when the session is purged.
CREATE TABLE IF NOT EXISTS analytics_open (
  workspace_id TEXT    NOT NULL,
  session_id   TEXT    NOT NULL,
  day          INTEGER NOT NULL,
  channel      TEXT    NOT NULL,
  purpose      TEXT    NOT NULL,
  app          TEXT    NOT NULL,
  expires_at   INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, session_id)
) WITHOUT ROWID;
-- The query counts one workspace's sessions still live: a range on (workspace_id, expires_at).
CREATE INDEX IF NOT EXISTS analytics_open_ws_expiry ON analytics_open (workspace_id, expires_at);
