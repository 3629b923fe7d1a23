-- Analytics by country (SPEC §3, §8 `by_country`): every bucket gains the destination's calling
-- code ('233'; '' when not known, and for the rows kept before this migration: answered as
-- "other"). analytics_daily's primary key is the bucket, so the table is rebuilt with country in
-- it (SQLite cannot change a primary key in place); its rows are kept, with country ''.
CREATE TABLE analytics_daily_new (
  workspace_id           TEXT    NOT NULL,
  day                    INTEGER NOT NULL,
  country                TEXT    NOT NULL DEFAULT '',
  channel                TEXT    NOT NULL,
  purpose                TEXT    NOT NULL,
  app                    TEXT    NOT NULL,
  sent                   INTEGER NOT NULL DEFAULT 0,
  reused                 INTEGER NOT NULL DEFAULT 0,
  delivery_failed        INTEGER NOT NULL DEFAULT 0,
  verified               INTEGER NOT NULL DEFAULT 0,
  failed                 INTEGER NOT NULL DEFAULT 0,
  sms_segments           INTEGER NOT NULL DEFAULT 0,
  resent                 INTEGER NOT NULL DEFAULT 0,
  fraud_blocked          INTEGER NOT NULL DEFAULT 0,
  fraud_blocked_segments INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (workspace_id, day, country, channel, purpose, app)
) WITHOUT ROWID;
INSERT INTO analytics_daily_new (workspace_id, day, country, channel, purpose, app, sent, reused,
  delivery_failed, verified, failed, sms_segments, resent, fraud_blocked, fraud_blocked_segments)
SELECT workspace_id, day, '', channel, purpose, app, sent, reused, delivery_failed, verified,
  failed, sms_segments, resent, fraud_blocked, fraud_blocked_segments FROM analytics_daily;
DROP TABLE analytics_daily;
ALTER TABLE analytics_daily_new RENAME TO analytics_daily;

-- The bucket an open session counts in. Its key stays (workspace_id, session_id).
ALTER TABLE analytics_open ADD COLUMN country TEXT NOT NULL DEFAULT '';
