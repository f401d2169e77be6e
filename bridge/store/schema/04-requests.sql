-- v4 -> v5: The ids of accepted requests and their responses, so a repeat is not run again

CREATE TABLE matrix2mqtt_requests (
	action      TEXT   NOT NULL,
	request_id  TEXT   NOT NULL,
	accepted_at BIGINT NOT NULL,
	response    TEXT   NOT NULL DEFAULT '',
	PRIMARY KEY (action, request_id)
);

CREATE INDEX matrix2mqtt_requests_accepted_at_idx ON matrix2mqtt_requests (accepted_at);
