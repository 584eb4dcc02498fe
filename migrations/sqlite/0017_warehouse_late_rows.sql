-- The warehouse export finds request-log rows written after their day was exported (a
-- killed replica's journal replayed at its next start, the spill file after an outage): the
-- time up to which rows were seen, and an index to find the ones written since.
ALTER TABLE warehouse_watermarks ADD COLUMN logged_through BIGINT NOT NULL DEFAULT 0;
CREATE INDEX request_log_logged ON request_log(logged_at);
