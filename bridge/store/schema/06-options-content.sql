-- v6 -> v7: The content of a message sent with options, so that the edit closing a single_use message keeps its msgtype and file

ALTER TABLE matrix2mqtt_options ADD COLUMN content TEXT NOT NULL DEFAULT '';
