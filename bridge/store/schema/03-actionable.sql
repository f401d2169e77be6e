-- v3 -> v4: Actionable messages: options, tags, last message per room, reads, polls

CREATE TABLE matrix2mqtt_options (
	event_id    TEXT    PRIMARY KEY,
	room_id     TEXT    NOT NULL,
	request_id  TEXT    NOT NULL DEFAULT '',
	options     TEXT    NOT NULL,
	allowed     TEXT    NOT NULL DEFAULT '[]',
	reactions   TEXT    NOT NULL DEFAULT '{}',
	single_use  BOOLEAN NOT NULL DEFAULT false,
	body        TEXT    NOT NULL DEFAULT '',
	html        TEXT    NOT NULL DEFAULT '',
	answered_by TEXT    NOT NULL DEFAULT '',
	created_at  BIGINT  NOT NULL
);

CREATE INDEX matrix2mqtt_options_created_at_idx ON matrix2mqtt_options (created_at);

-- The bot's messages by tag in each room (a later send with the tag edits it).
CREATE TABLE matrix2mqtt_tags (
	room_id  TEXT   NOT NULL,
	tag      TEXT   NOT NULL,
	event_id TEXT   NOT NULL,
	sent_at  BIGINT NOT NULL,
	PRIMARY KEY (room_id, tag)
);

-- The messages the bridge sent, with the request that sent them, and which users read them (a
-- read receipt or a later message covers them), so each read is published once. Pruned after
-- ReadRetention.
CREATE TABLE matrix2mqtt_sent (
	event_id   TEXT   PRIMARY KEY,
	room_id    TEXT   NOT NULL,
	request_id TEXT   NOT NULL DEFAULT '',
	sent_at    BIGINT NOT NULL
);

CREATE INDEX matrix2mqtt_sent_room_idx ON matrix2mqtt_sent (room_id, sent_at);

CREATE TABLE matrix2mqtt_reads (
	event_id TEXT   NOT NULL,
	user_id  TEXT   NOT NULL,
	read_at  BIGINT NOT NULL,
	PRIMARY KEY (event_id, user_id)
);

CREATE INDEX matrix2mqtt_reads_read_at_idx ON matrix2mqtt_reads (read_at);

-- Polls the bridge started (MSC3381) and the latest response of each voter, for the tally.
CREATE TABLE matrix2mqtt_polls (
	event_id       TEXT    PRIMARY KEY,
	room_id        TEXT    NOT NULL,
	request_id     TEXT    NOT NULL DEFAULT '',
	question       TEXT    NOT NULL,
	-- JSON [{id, text}]
	answers        TEXT    NOT NULL,
	max_selections INTEGER NOT NULL,
	ended_at       BIGINT  NOT NULL DEFAULT 0,
	created_at     BIGINT  NOT NULL
);

CREATE INDEX matrix2mqtt_polls_created_at_idx ON matrix2mqtt_polls (created_at);

CREATE TABLE matrix2mqtt_poll_votes (
	poll_id  TEXT   NOT NULL,
	user_id  TEXT   NOT NULL,
	-- JSON list of answer ids, as the latest response gave them
	answers  TEXT   NOT NULL,
	ts       BIGINT NOT NULL,
	PRIMARY KEY (poll_id, user_id)
);
