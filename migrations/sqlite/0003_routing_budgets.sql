-- Routing decisions and spend in the request log (budgets are summed from it).
ALTER TABLE request_log ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN saved_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN route_tier TEXT;
ALTER TABLE request_log ADD COLUMN route_reason TEXT;
CREATE INDEX request_log_key_time ON request_log(key_id, created_at);
