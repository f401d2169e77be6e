-- v0 -> v1: Latest revision

-- Package matrix made this table before (its schema v2 -> v3), hence IF NOT EXISTS.
CREATE TABLE IF NOT EXISTS matrix2mqtt_undecrypted (
	event_id TEXT PRIMARY KEY,
	room_id  TEXT NOT NULL,
	sender   TEXT NOT NULL,
	seen_at  BIGINT NOT NULL
);
