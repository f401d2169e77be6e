-- v1 -> v2: Remember the transaction IDs of the bot's own events seen in sync

CREATE TABLE matrix2mqtt_echo (
	txn_id   TEXT PRIMARY KEY,
	event_id TEXT NOT NULL,
	seen_at  BIGINT NOT NULL
);
