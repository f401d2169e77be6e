package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// noderedDir holds the Node-RED that scripts/install-deps.sh installs (npm ci there).
const noderedDir = "../internal/nodered"

// startNodeRED runs Node-RED headless with our settings and the given flow file, and returns
// the base URL of its HTTP nodes.
func startNodeRED(t *testing.T, flowFile string) string {
	t.Helper()
	red, err := filepath.Abs(filepath.Join(noderedDir, "node_modules", "node-red", "red.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(red); err != nil {
		t.Fatalf("Node-RED is not installed in %s; run scripts/install-deps.sh (or npm ci there): %v", noderedDir, err)
	}
	settings, _ := filepath.Abs(filepath.Join(noderedDir, "settings.js"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", red, "--settings", settings)
	cmd.Env = append(os.Environ(), "NODE_RED_PORT="+strconv.Itoa(port), "NODE_RED_USER_DIR="+t.TempDir(), "NODE_RED_FLOW_FILE="+flowFile)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("failed to start Node-RED: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("Node-RED log:\n%s", log.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	eventually(t, 60*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("Node-RED exited:\n%s", log.String())
		default:
		}
		// The flow is running once its MQTT node connected to the broker.
		if !strings.Contains(log.String(), "Connected to broker") {
			return fmt.Errorf("flow not connected to the broker yet")
		}
		return nil
	})
	return base
}

// startFlow runs the example flow in file in a real Node-RED, pointed at the test broker and at
// h's base topic, and returns Node-RED's URL.
func startFlow(t *testing.T, h *harness, file string) string {
	t.Helper()
	flow, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []map[string]any
	if err := json.Unmarshal(flow, &nodes); err != nil {
		t.Fatalf("the flow is not JSON: %v", err)
	}
	_, port, _ := net.SplitHostPort(env.MQTTAddr)
	for _, n := range nodes {
		switch n["type"] {
		case "mqtt-broker":
			n["broker"], n["port"] = "127.0.0.1", port
		case "mqtt in", "mqtt out":
			if topic, ok := n["topic"].(string); ok {
				n["topic"] = strings.Replace(topic, "matrix2mqtt/", h.base+"/", 1)
			}
		case "function":
			n["func"] = strings.Replace(n["func"].(string), `const base = "matrix2mqtt";`, fmt.Sprintf("const base = %q;", h.base), 1)
		}
	}
	patched, _ := json.Marshal(nodes)
	flowFile := filepath.Join(t.TempDir(), "flows.json")
	if err := os.WriteFile(flowFile, patched, 0o644); err != nil {
		t.Fatal(err)
	}
	return startNodeRED(t, flowFile)
}

// TestNodeREDSendAndWait runs configs/node-red/send-and-wait.json in a real Node-RED against
// the bridge: a send request goes in over HTTP, and the HTTP answer is the bridge's response
// with the same id.
func TestNodeREDSendAndWait(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)

	base := startFlow(t, h, "../configs/node-red/send-and-wait.json")

	post := func(body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(base+"/matrix2mqtt/send", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var v map[string]any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("answer is not JSON: %s", data)
		}
		return resp.StatusCode, v
	}

	t.Run("ok", func(t *testing.T) {
		status, resp := post(fmt.Sprintf(`{"to":%q,"text":"from Node-RED"}`, room))
		reqID, _ := resp["id"].(string)
		if status != http.StatusOK || resp["status"] != "ok" || !strings.HasPrefix(reqID, "node-red-") {
			t.Fatalf("HTTP %d %v", status, resp)
		}
		data := resp["data"].(map[string]any)
		evt := h.alice.event(t, room, id.EventID(data["event_id"].(string)))
		if body := evt.Content.AsMessage().Body; body != "from Node-RED" {
			t.Fatalf("body = %q", body)
		}
		// The bridge answered on its response topic with the same id.
		h.response("send", reqID)
	})
	t.Run("error", func(t *testing.T) {
		status, resp := post(`{"to":"nobody","text":"x"}`)
		e, _ := resp["error"].(map[string]any)
		if status != http.StatusBadGateway || e["code"] != "unknown_target" {
			t.Fatalf("HTTP %d %v", status, resp)
		}
	})
	t.Run("concurrent requests get their own answers", func(t *testing.T) {
		type result struct {
			status int
			resp   map[string]any
		}
		results := make(chan result, 2)
		for _, body := range []string{fmt.Sprintf(`{"to":%q,"text":"one"}`, room), `{"to":"nobody","text":"two"}`} {
			go func() {
				resp, err := http.Post(base+"/matrix2mqtt/send", "application/json", strings.NewReader(body))
				if err != nil {
					results <- result{}
					return
				}
				defer resp.Body.Close()
				var v map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&v)
				results <- result{resp.StatusCode, v}
			}()
		}
		seen := map[int]bool{}
		for range 2 {
			r := <-results
			seen[r.status] = true
			if (r.status == http.StatusOK) != (r.resp["status"] == "ok") {
				t.Errorf("HTTP %d with %v", r.status, r.resp)
			}
		}
		if !seen[http.StatusOK] || !seen[http.StatusBadGateway] {
			t.Fatalf("statuses = %v", seen)
		}
	})
}

// lockedBuffer is a bytes.Buffer that a process writes while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNodeREDSendMediaBuffer runs configs/node-red/send-media-buffer.json in a real Node-RED:
// a file POSTed to it is published as a Buffer to the binary shortcut and lands in the room
// with the same bytes.
func TestNodeREDSendMediaBuffer(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	base := startFlow(t, h, "../configs/node-red/send-media-buffer.json")

	pic := testPNG(t, 120, 90)
	resp, err := http.Post(base+"/matrix2mqtt/send_media/"+room.String(), "image/png", bytes.NewReader(pic))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	answer := h.rec.wait(30*time.Second, "send_media response", func(m message) bool {
		return m.Topic == h.base+"/bridge/response/send_media"
	}).json(t)
	c := h.mediaEvent(t, room, h.ok(answer))
	if c.MsgType != "m.image" || c.Info.Width != 120 || !bytes.Equal(h.alice.download(t, c.URL), pic) {
		t.Fatalf("content = %+v", c)
	}
}
