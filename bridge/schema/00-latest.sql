-- v0 -> v1: Latest revision

CREATE TABLE matrix2mqtt_outbox (
	id         INTEGER PRIMARY KEY,
	action     TEXT    NOT NULL,
	lane       TEXT    NOT NULL,
	request    TEXT    NOT NULL,
	txn_id     TEXT    NOT NULL,
	created_at BIGINT  NOT NULL,
	expires_at BIGINT  NOT NULL DEFAULT 0,
	not_before BIGINT  NOT NULL DEFAULT 0,
	-- packet ID and payload hash of the MQTT message, to recognise its redelivery
	mqtt_key   TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX matrix2mqtt_outbox_mqtt_key_idx ON matrix2mqtt_outbox (mqtt_key);

-- MQTT messages whose requests are done. The broker may deliver a message again after a crash
-- even when the bridge acknowledged it (the PUBACK was still in the client's send queue), so
-- their keys are remembered for a day.
CREATE TABLE matrix2mqtt_done (
	mqtt_key TEXT   PRIMARY KEY,
	done_at  BIGINT NOT NULL
);

CREATE INDEX matrix2mqtt_done_done_at_idx ON matrix2mqtt_done (done_at);

-- Inbound events already handed to the broker, so a sync replayed after a crash is not
-- published twice. Pruned after a day.
CREATE TABLE matrix2mqtt_inbound (
	event_id     TEXT   PRIMARY KEY,
	published_at BIGINT NOT NULL
);

CREATE INDEX matrix2mqtt_inbound_published_at_idx ON matrix2mqtt_inbound (published_at);
