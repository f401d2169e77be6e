package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

// TestMosquittoExampleACL runs a Mosquitto with configs/mosquitto (only the ports, the file
// paths and persistence changed for the test) and checks that only the bridge and Home
// Assistant users reach matrix2mqtt/# and homeassistant/#, that only the bridge writes its own
// topics (state, responses, inbound), and that the TLS listener takes only clients that trust
// its CA and log in.
func TestMosquittoExampleACL(t *testing.T) {
	broker, err := exec.LookPath("mosquitto")
	if err != nil {
		broker = "/usr/sbin/mosquitto"
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range []string{"matrix2mqtt", "homeassistant", "someone"} {
		args := []string{"-b", passwd, u, u + "-secret"}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	if err := os.Chmod(passwd, 0o600); err != nil {
		t.Fatal(err)
	}
	acl, _ := filepath.Abs("../configs/mosquitto/matrix2mqtt.acl")
	conf, err := os.ReadFile("../configs/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	addr, tlsAddr := freeAddr(t), freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	certs, err := testenv.WriteCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	replaced := map[string]string{
		"listener 1883 127.0.0.1":                  "listener " + port + " 127.0.0.1",
		"listener 8883":                            "listener " + tlsPort + " 127.0.0.1",
		"certfile /etc/mosquitto/certs/broker.crt": "certfile " + certs.ServerCert,
		"keyfile /etc/mosquitto/certs/broker.key":  "keyfile " + certs.ServerKey,
		"password_file /etc/mosquitto/passwd":      "password_file " + passwd,
		"acl_file /etc/mosquitto/matrix2mqtt.acl":  "acl_file " + acl,
		"persistence true":                         "persistence false",
		"persistence_location /var/lib/mosquitto/": "",
	}
	text := string(conf)
	for old, repl := range replaced {
		if !strings.Contains(text, "\n"+old+"\n") {
			t.Fatalf("configs/mosquitto/mosquitto.conf has no line %q", old)
		}
		text = strings.Replace(text, "\n"+old+"\n", "\n"+repl+"\n", 1)
	}
	if os.Geteuid() == 0 {
		text += "user root\n" // else Mosquitto drops to a user that cannot read the test's files
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, broker, "-c", confPath)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", log.String())
		}
	})
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})

	t.Run("tls", func(t *testing.T) {
		ca, err := os.ReadFile(certs.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		trusted := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if _, err := connectURL("ssl://"+tlsAddr, "homeassistant", "homeassistant-secret", &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
			t.Error("connected over TLS without trusting the broker's CA")
		}
		if _, err := connectURL("ssl://"+tlsAddr, "someone", "wrong", trusted); err == nil {
			t.Error("connected over TLS with a wrong password")
		}
		c, err := connectURL("ssl://"+tlsAddr, "homeassistant", "homeassistant-secret", trusted)
		if err != nil {
			t.Fatalf("Home Assistant failed to connect over TLS: %v", err)
		}
		c.Disconnect(100)
	})

	bridge := aclClient(t, addr, "matrix2mqtt", "matrix2mqtt/bridge/request/+", "homeassistant/status")
	ha := aclClient(t, addr, "homeassistant", "matrix2mqtt/#", "homeassistant/#")
	other := aclClient(t, addr, "someone", "matrix2mqtt/#", "homeassistant/#")
	if _, err := connect(addr, "anonymous", ""); err == nil {
		t.Error("an anonymous client could connect")
	}

	other.publish("matrix2mqtt/bridge/request/send", "from someone")
	other.publish("homeassistant/status", "online from someone")
	ha.publish("matrix2mqtt/bridge/request/send", "from home assistant")
	ha.publish("homeassistant/status", "online")
	// Only the bridge writes its own topics: Home Assistant (and anyone else) cannot fake its
	// state, a response or an inbound message.
	ha.publish("matrix2mqtt/bridge/state", "offline faked by home assistant")
	ha.publish("matrix2mqtt/bridge/response/send", "faked by home assistant")
	ha.publish("matrix2mqtt/room/kitchen/message", "faked by home assistant")
	other.publish("matrix2mqtt/bridge/state", "offline faked by someone")
	bridge.publish("matrix2mqtt/bridge/state", "online")
	bridge.publish("homeassistant/device/x/config", "{}")

	bridge.waitFor("from home assistant")
	bridge.waitFor("online")
	ha.waitFor("matrix2mqtt/bridge/state online")
	ha.waitFor("homeassistant/device/x/config {}")
	for _, c := range []*aclRecorder{bridge, ha} {
		for _, got := range c.all() {
			if strings.Contains(got, "someone") {
				t.Errorf("%s received what an unlisted user published: %s", c.user, got)
			}
		}
	}
	for _, got := range ha.all() {
		if strings.Contains(got, "faked") {
			t.Errorf("a client other than the bridge wrote a topic of the bridge: %s", got)
		}
	}
	if got := other.all(); len(got) > 0 {
		t.Errorf("an unlisted user received %v", got)
	}
}

// aclRecorder is a client of the ACL test that records "topic payload" of what it receives.
type aclRecorder struct {
	t    *testing.T
	user string
	cli  paho.Client
	mu   sync.Mutex
	got  []string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func connect(addr, user, password string) (paho.Client, error) {
	return connectURL("tcp://"+addr, user, password, nil)
}

func connectURL(url, user, password string, tlsConfig *tls.Config) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(url).SetConnectTimeout(5 * time.Second)
	if tlsConfig != nil {
		opts.SetTLSConfig(tlsConfig)
	}
	opts.SetClientID(fmt.Sprintf("acl-%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetCleanSession(true)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

func aclClient(t *testing.T, addr, user string, filters ...string) *aclRecorder {
	t.Helper()
	c, err := connect(addr, user, user+"-secret")
	if err != nil {
		t.Fatalf("%s failed to connect: %v", user, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	r := &aclRecorder{t: t, user: user, cli: c}
	for _, f := range filters {
		tok := c.Subscribe(f, 1, func(_ paho.Client, m paho.Message) {
			r.mu.Lock()
			r.got = append(r.got, m.Topic()+" "+string(m.Payload()))
			r.mu.Unlock()
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s failed to subscribe: %v", user, tok.Error())
		}
	}
	return r
}

func (r *aclRecorder) publish(topic, payload string) {
	r.t.Helper()
	tok := r.cli.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		r.t.Fatalf("%s failed to publish: %v", r.user, tok.Error())
	}
}

func (r *aclRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.got...)
}

func (r *aclRecorder) waitFor(suffix string) {
	r.t.Helper()
	eventually(r.t, 10*time.Second, func() error {
		for _, got := range r.all() {
			if strings.HasSuffix(got, suffix) {
				return nil
			}
		}
		return fmt.Errorf("%s has not received %q; got %v", r.user, suffix, r.all())
	})
}
