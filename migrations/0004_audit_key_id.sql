-- Admin actions in a workspace's trail (SPEC §9 "Admin"): key_created and key_revoked name their
-- key by id (never the key or its hash); NULL for every other event. Admin events have no
-- session, purpose or destination: those columns hold ''.
ALTER TABLE audit_events ADD COLUMN key_id TEXT;
