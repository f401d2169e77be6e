-- v2 -> v3: Friendly names that create_room gives to the rooms it makes

CREATE TABLE matrix2mqtt_room_key (
	key     TEXT PRIMARY KEY,
	room_id TEXT NOT NULL
);
