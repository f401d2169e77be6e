-- v2 -> v3: Remember encrypted events whose keys had not arrived when their sync was saved

CREATE TABLE matrix2mqtt_undecrypted (
	event_id TEXT PRIMARY KEY,
	room_id  TEXT NOT NULL,
	sender   TEXT NOT NULL,
	seen_at  BIGINT NOT NULL
);
