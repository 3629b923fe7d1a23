-- Resend (SPEC §7): codes sent again for a session, per bucket. Its SMS segments count in
-- sms_segments with the first send's.
ALTER TABLE analytics_daily ADD COLUMN resent INTEGER NOT NULL DEFAULT 0;

-- Channel fallback (SPEC §7): the channel of each delivery event (delivered, delivery_failed,
-- resent); NULL for the others.
ALTER TABLE audit_events ADD COLUMN channel TEXT;
