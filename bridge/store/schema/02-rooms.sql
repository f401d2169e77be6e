-- v2 -> v3: Friendly names that create_room gives to the rooms it makes, and room upgrades

CREATE TABLE matrix2mqtt_room_key (
	key     TEXT PRIMARY KEY,
	room_id TEXT NOT NULL
);

-- Rooms replaced by an upgrade (m.room.tombstone) that the bot followed: requests for the old
-- room go to the new one.
CREATE TABLE matrix2mqtt_room_upgrade (
	old_room_id TEXT PRIMARY KEY,
	new_room_id TEXT NOT NULL
);
