package integration

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

// TestShutdownWhileBrokerIsGone: the bridge is answering a flood of bad requests when its
// broker stops; asked to stop then, it stops within seconds instead of waiting for the broker
// to come back (the answers it could not publish are dropped, with a warning).
func TestShutdownWhileBrokerIsGone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	broker, err := testenv.Start(ctx, testenv.Options{MosquittoOnly: true})
	if err != nil {
		t.Fatalf("failed to start Mosquitto: %v", err)
	}
	t.Cleanup(func() { broker.Close() })
	bot := newUser(t, "bot")
	const base = "gone"
	cfg, err := bridge.LoadConfig([]string{
		"MATRIX_HOMESERVER=" + env.HomeserverURL, "MATRIX_USER_ID=" + bot.UserID, "MATRIX_PASSWORD=" + bot.Password,
		"MQTT_URL=" + broker.MQTTURL, "MQTT_CLIENT_ID=" + base, "MQTT_BASE_TOPIC=" + base, "DATA_DIR=" + t.TempDir(),
		"E2EE=false", "HA_DISCOVERY=false", "SHUTDOWN_TIMEOUT=2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	var online, answered atomic.Int64
	cli := paho.NewClient(paho.NewClientOptions().AddBroker(broker.MQTTURL).SetClientID("gone-test").
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			switch {
			case m.Topic() == base+"/bridge/state" && string(m.Payload()) == "online":
				online.Add(1)
			case strings.HasPrefix(m.Topic(), base+"/bridge/response/"):
				answered.Add(1)
			}
		}))
	if tok := cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("failed to connect: %v", tok.Error())
	}
	defer cli.Disconnect(0)
	if tok := cli.Subscribe(base+"/bridge/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("failed to subscribe: %v", tok.Error())
	}

	runCtx, stop := context.WithCancel(zerolog.New(testLogWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx))
	defer stop()
	done := make(chan error, 1)
	go func() { done <- bridge.Run(runCtx, cfg, bridge.Options{Version: "test"}) }()
	eventually(t, 30*time.Second, func() error {
		if online.Load() == 0 {
			return fmt.Errorf("bridge not online")
		}
		return nil
	})

	// QoS 0 requests are queued by the intake without flow control: thousands of them keep it
	// answering for a while.
	const flood = 3000
	for i := range flood {
		cli.Publish(base+"/bridge/request/send", 0, false, fmt.Sprintf(`{"id":"bad-%d","txt":"typo"}`, i))
	}
	eventually(t, 10*time.Second, func() error {
		if answered.Load() == 0 {
			return fmt.Errorf("no answer yet")
		}
		return nil
	})
	if err := broker.StopMosquitto(); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker stopped after %d of %d answers", answered.Load(), flood)
	time.Sleep(500 * time.Millisecond) // the bridge notices the broker is gone
	stopped := time.Now()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bridge stopped with error: %v", err)
		}
		t.Logf("bridge stopped %s after it was asked to", time.Since(stopped).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("bridge did not stop within 15s of being asked to while the broker is gone")
	}
}
