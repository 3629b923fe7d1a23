-- Fraud Guard (SPEC §9): sends it refused, per bucket, and the SMS segments they would have cost
-- (the money it saved, priced at the workspace's pricePerSegment when answered).
ALTER TABLE analytics_daily ADD COLUMN fraud_blocked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE analytics_daily ADD COLUMN fraud_blocked_segments INTEGER NOT NULL DEFAULT 0;
