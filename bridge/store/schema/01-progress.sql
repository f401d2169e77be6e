-- v1 -> v2: The progress of requests made of several Matrix steps

ALTER TABLE matrix2mqtt_outbox ADD COLUMN progress TEXT NOT NULL DEFAULT '';
