-- v7 -> v8: Media, polls, locations and broadcasts are watched for reads too; only the text messages of send are editable by "edit": "last"

ALTER TABLE matrix2mqtt_sent ADD COLUMN editable BOOLEAN NOT NULL DEFAULT true;
