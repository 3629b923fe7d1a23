-- Top provider error codes (SPEC §8 `top_errors`): how many messages of a bucket a delivery
-- receipt said were undelivered or failed, per provider error code. Same bucket as
-- analytics_daily, kept as long (rows older than 90 days go when a session of the workspace is
-- purged).
CREATE TABLE analytics_errors (
  workspace_id TEXT    NOT NULL,
  day          INTEGER NOT NULL,
  country      TEXT    NOT NULL DEFAULT '',
  channel      TEXT    NOT NULL,
  purpose      TEXT    NOT NULL,
  app          TEXT    NOT NULL,
  code         TEXT    NOT NULL,
  count        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (workspace_id, day, country, channel, purpose, app, code)
) WITHOUT ROWID;
