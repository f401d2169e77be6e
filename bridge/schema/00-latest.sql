-- v0 -> v1: Latest revision

CREATE TABLE matrix2mqtt_outbox (
	id         INTEGER PRIMARY KEY,
	action     TEXT    NOT NULL,
	lane       TEXT    NOT NULL,
	request    TEXT    NOT NULL,
	txn_id     TEXT    NOT NULL,
	created_at BIGINT  NOT NULL,
	expires_at BIGINT  NOT NULL DEFAULT 0,
	not_before BIGINT  NOT NULL DEFAULT 0
);
