package mqtt

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
	"github.com/rs/zerolog"
)

// TestPublishesSurviveBrokerRestarts publishes from several goroutines while a real Mosquitto
// (with persistence) restarts three times: every publish that returned without error reaches a
// subscriber with a persistent session, and none of them is lost in paho's resend after a
// reconnect.
func TestPublishesSurviveBrokerRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := startMosquitto(ctx, t, testenv.Options{MosquittoPersistence: true})

	var mu sync.Mutex
	received := map[string]int{}
	subOpts := paho.NewClientOptions().AddBroker(env.MQTTURL).SetClientID("restart-sub").
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetResumeSubs(true).SetOrderMatters(false)
	// The broker keeps the subscription in the persistent session, across its restarts too.
	subOpts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		mu.Lock()
		received[string(m.Payload())]++
		mu.Unlock()
	})
	sub := paho.NewClient(subOpts)
	if err := wait(ctx, sub.Connect()); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(100)
	if err := wait(ctx, sub.Subscribe("restart/#", 1, nil)); err != nil {
		t.Fatal(err)
	}

	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	pub, err := New(logger.WithContext(ctx), Config{URL: env.MQTTURL, ClientID: "restart-pub", BaseTopic: "restart",
		KeepAlive: 5 * time.Second, MaxInflight: 16}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(100 * time.Millisecond)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked []string
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				payload := fmt.Sprintf("%d-%d", g, i)
				if err := pub.Publish(ctx, fmt.Sprintf("restart/%d", g), false, []byte(payload)); err != nil {
					t.Logf("publish %s: %v", payload, err)
					continue
				}
				mu.Lock()
				acked = append(acked, payload)
				mu.Unlock()
			}
		}()
	}
	for range 3 {
		time.Sleep(time.Second)
		if err := env.RestartMosquitto(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		var missing []string
		for _, p := range acked {
			if received[p] == 0 {
				missing = append(missing, p)
			}
		}
		total := len(acked)
		mu.Unlock()
		if len(missing) == 0 {
			t.Logf("%d publishes acknowledged across 3 broker restarts, all received", total)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged publishes never arrived, e.g. %v", len(missing), total, missing[:min(10, len(missing))])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startMosquitto starts a real Mosquitto alone, with opts, and stops it when the test ends.
func startMosquitto(ctx context.Context, t *testing.T, opts testenv.Options) *testenv.Env {
	t.Helper()
	opts.MosquittoOnly = true
	env, err := testenv.Start(ctx, opts)
	if err != nil {
		t.Fatalf("failed to start Mosquitto (scripts/install-deps.sh installs it): %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	})
	return env
}
