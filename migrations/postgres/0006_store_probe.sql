-- One row the health probe upserts (a real write) every database.health_interval_ms.
CREATE TABLE store_probe (
    id  INTEGER PRIMARY KEY,
    at  BIGINT NOT NULL
);
