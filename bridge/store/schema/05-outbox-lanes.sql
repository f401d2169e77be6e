-- v5 -> v6: Outbox entries by lane, to read a long queue a part at a time, and by request id, to cancel one that waits there

ALTER TABLE matrix2mqtt_outbox ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
CREATE INDEX matrix2mqtt_outbox_lane_idx ON matrix2mqtt_outbox (lane, id);
CREATE INDEX matrix2mqtt_outbox_request_id_idx ON matrix2mqtt_outbox (request_id);
