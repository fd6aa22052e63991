-- Per-call budget decided when the stream binds (the per-call cap, or less when the month's
-- remaining room is shared with the user's other live calls), and the rate version the call
-- runs under, so its events are priced consistently.
ALTER TABLE calls ADD COLUMN budget_cents INTEGER CHECK (budget_cents >= 0);
ALTER TABLE calls ADD COLUMN rate_version_id INTEGER REFERENCES cost_rate_versions(id);
