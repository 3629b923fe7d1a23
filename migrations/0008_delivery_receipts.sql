-- Delivery receipts (SPEC §8): per bucket, the messages a receipt said were delivered, and
-- undelivered or failed.
ALTER TABLE analytics_daily ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE analytics_daily ADD COLUMN undelivered INTEGER NOT NULL DEFAULT 0;
