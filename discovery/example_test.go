package discovery_test

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/matrix2mqtt/matrix2mqtt/discovery"
)

func ExamplePayload() {
	topic, payload, err := discovery.Payload(discovery.Bridge{
		BaseTopic: "matrix2mqtt",
		NodeID:    discovery.ObjectID("@bot:example.org"),
		Name:      "matrix2mqtt @bot:example.org",
		Version:   "1.0.0",
		Targets:   []string{"alice"},
		Rooms:     []string{"kitchen"},
		Commands:  []string{"lights"},
	})
	if err != nil {
		panic(err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, payload, "", "  "); err != nil {
		panic(err)
	}
	fmt.Println(topic)
	fmt.Println(pretty.String())
	// Output:
	// homeassistant/device/matrix2mqtt_bot_example_org/config
	// {
	//   "dev": {
	//     "ids": [
	//       "matrix2mqtt_bot_example_org"
	//     ],
	//     "name": "matrix2mqtt @bot:example.org",
	//     "mf": "matrix2mqtt",
	//     "mdl": "Matrix to MQTT bridge",
	//     "sw": "1.0.0"
	//   },
	//   "o": {
	//     "name": "matrix2mqtt",
	//     "sw": "1.0.0",
	//     "url": "https://github.com/matrix2mqtt/matrix2mqtt"
	//   },
	//   "cmps": {
	//     "callback_kitchen": {
	//       "p": "device_automation",
	//       "atype": "trigger",
	//       "t": "matrix2mqtt/room/kitchen/callback",
	//       "type": "callback",
	//       "stype": "kitchen",
	//       "qos": 1
	//     },
	//     "command_lights": {
	//       "p": "device_automation",
	//       "atype": "trigger",
	//       "t": "matrix2mqtt/command/lights",
	//       "type": "command",
	//       "stype": "lights",
	//       "qos": 1
	//     },
	//     "connectivity": {
	//       "p": "binary_sensor",
	//       "name": "Matrix connection",
	//       "uniq_id": "matrix2mqtt_bot_example_org_connectivity",
	//       "def_ent_id": "binary_sensor.matrix2mqtt_bot_example_org_connectivity",
	//       "dev_cla": "connectivity",
	//       "ent_cat": "diagnostic",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ 'None' if value_json.matrix_connected is not defined else ('ON' if value_json.matrix_connected else 'OFF') }}",
	//       "pl_on": "ON",
	//       "pl_off": "OFF",
	//       "qos": 1
	//     },
	//     "e2ee_status": {
	//       "p": "sensor",
	//       "name": "E2EE status",
	//       "uniq_id": "matrix2mqtt_bot_example_org_e2ee_status",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_e2ee_status",
	//       "ent_cat": "diagnostic",
	//       "ic": "mdi:lock",
	//       "stat_t": "matrix2mqtt/bridge/info",
	//       "val_tpl": "{{ value_json.e2ee.status if value_json.e2ee is defined and value_json.e2ee.status is defined else 'None' }}",
	//       "qos": 1
	//     },
	//     "expired": {
	//       "p": "sensor",
	//       "name": "Messages expired",
	//       "uniq_id": "matrix2mqtt_bot_example_org_expired",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_expired",
	//       "stat_cla": "total_increasing",
	//       "ic": "mdi:timer-sand",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.expired }}",
	//       "qos": 1
	//     },
	//     "failed": {
	//       "p": "sensor",
	//       "name": "Messages failed",
	//       "uniq_id": "matrix2mqtt_bot_example_org_failed",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_failed",
	//       "stat_cla": "total_increasing",
	//       "ic": "mdi:alert-circle",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.failed }}",
	//       "qos": 1
	//     },
	//     "flush_outbox": {
	//       "p": "button",
	//       "name": "Flush outbox",
	//       "uniq_id": "matrix2mqtt_bot_example_org_flush_outbox",
	//       "def_ent_id": "button.matrix2mqtt_bot_example_org_flush_outbox",
	//       "ent_cat": "config",
	//       "cmd_t": "matrix2mqtt/bridge/request/outbox_flush",
	//       "pl_prs": "{\"id\":\"ha_flush\"}",
	//       "qos": 1
	//     },
	//     "inbound": {
	//       "p": "sensor",
	//       "name": "Messages received",
	//       "uniq_id": "matrix2mqtt_bot_example_org_inbound",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_inbound",
	//       "stat_cla": "total_increasing",
	//       "ic": "mdi:message-text",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.inbound }}",
	//       "qos": 1
	//     },
	//     "joined_rooms": {
	//       "p": "sensor",
	//       "name": "Joined rooms",
	//       "uniq_id": "matrix2mqtt_bot_example_org_joined_rooms",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_joined_rooms",
	//       "stat_cla": "measurement",
	//       "ic": "mdi:forum",
	//       "stat_t": "matrix2mqtt/bridge/rooms",
	//       "val_tpl": "{{ value_json | count }}",
	//       "qos": 1
	//     },
	//     "last_error": {
	//       "p": "sensor",
	//       "name": "Last error",
	//       "uniq_id": "matrix2mqtt_bot_example_org_last_error",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_last_error",
	//       "ent_cat": "diagnostic",
	//       "ic": "mdi:alert-circle",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ (value_json.last_error | default('None', true))[:255] }}",
	//       "qos": 1
	//     },
	//     "notify_alice": {
	//       "p": "notify",
	//       "name": "Send to alice",
	//       "uniq_id": "matrix2mqtt_bot_example_org_notify_alice",
	//       "def_ent_id": "notify.matrix2mqtt_bot_example_org_notify_alice",
	//       "cmd_t": "matrix2mqtt/send/alice",
	//       "cmd_tpl": "{{ {'text': value} | to_json }}",
	//       "qos": 1
	//     },
	//     "oldest_pending_age": {
	//       "p": "sensor",
	//       "name": "Oldest pending age",
	//       "uniq_id": "matrix2mqtt_bot_example_org_oldest_pending_age",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_oldest_pending_age",
	//       "dev_cla": "duration",
	//       "stat_cla": "measurement",
	//       "ent_cat": "diagnostic",
	//       "unit_of_meas": "s",
	//       "sug_dsp_prc": 0,
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.oldest_pending_age_s }}",
	//       "qos": 1
	//     },
	//     "outbox_pending": {
	//       "p": "sensor",
	//       "name": "Outbox pending",
	//       "uniq_id": "matrix2mqtt_bot_example_org_outbox_pending",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_outbox_pending",
	//       "stat_cla": "measurement",
	//       "ic": "mdi:tray-full",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.outbox_pending }}",
	//       "qos": 1
	//     },
	//     "room_kitchen": {
	//       "p": "event",
	//       "name": "Room kitchen",
	//       "uniq_id": "matrix2mqtt_bot_example_org_room_kitchen",
	//       "def_ent_id": "event.matrix2mqtt_bot_example_org_room_kitchen",
	//       "stat_t": "matrix2mqtt/room/kitchen/event",
	//       "evt_typ": [
	//         "message",
	//         "reaction",
	//         "command",
	//         "callback"
	//       ],
	//       "qos": 1
	//     },
	//     "sent": {
	//       "p": "sensor",
	//       "name": "Messages sent",
	//       "uniq_id": "matrix2mqtt_bot_example_org_sent",
	//       "def_ent_id": "sensor.matrix2mqtt_bot_example_org_sent",
	//       "stat_cla": "total_increasing",
	//       "ic": "mdi:send",
	//       "stat_t": "matrix2mqtt/bridge/stats",
	//       "val_tpl": "{{ value_json.sent }}",
	//       "qos": 1
	//     }
	//   },
	//   "avty_t": "matrix2mqtt/bridge/state",
	//   "pl_avail": "online",
	//   "pl_not_avail": "offline"
	// }
}
