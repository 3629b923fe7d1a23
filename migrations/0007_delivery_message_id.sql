-- The provider's message id of a delivered or resent message (SPEC §8 "Delivery receipts"),
-- when the gateway's reply named one; NULL for every other event.
ALTER TABLE audit_events ADD COLUMN message_id TEXT;
