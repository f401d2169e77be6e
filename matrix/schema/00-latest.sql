-- v0 -> v3: Latest revision

CREATE TABLE matrix2mqtt_session (
	user_id      TEXT PRIMARY KEY,
	homeserver   TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	access_token TEXT NOT NULL
);

CREATE TABLE matrix2mqtt_sync (
	user_id    TEXT PRIMARY KEY,
	next_batch TEXT NOT NULL
);

CREATE TABLE matrix2mqtt_room (
	room_id TEXT PRIMARY KEY,
	name    TEXT NOT NULL DEFAULT '',
	alias   TEXT NOT NULL DEFAULT ''
);

CREATE TABLE matrix2mqtt_echo (
	txn_id   TEXT PRIMARY KEY,
	event_id TEXT NOT NULL,
	seen_at  BIGINT NOT NULL
);

-- matrix2mqtt_undecrypted, made by v2 -> v3, belongs to package e2ee's schema now.
