// Package configs holds the example configuration files; its tests check that they fit together.
package configs

import (
	"bufio"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of a Compose file the test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

// composeService is the part of a Compose service the test reads.
type composeService struct {
	Command     string            `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// mount is one entry of a service's volumes.
type mount struct {
	source, target string
	bind           bool // a file or directory of this host, not a named volume
}

// mounts parses the short volume syntax (source:target[:mode]).
func mounts(t *testing.T, svc composeService) []mount {
	t.Helper()
	var out []mount
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Fatalf("volume %q has no target", v)
		}
		out = append(out, mount{source: parts[0], target: parts[1], bind: strings.HasPrefix(parts[0], ".") || strings.HasPrefix(parts[0], "/")})
	}
	return out
}

// mountOf returns the mount that holds the container path p: the one whose target is p or its
// nearest parent directory.
func mountOf(ms []mount, p string) (mount, bool) {
	var best mount
	found := false
	for _, m := range ms {
		if (p == m.target || strings.HasPrefix(p, strings.TrimSuffix(m.target, "/")+"/")) && len(m.target) >= len(best.target) {
			best, found = m, true
		}
	}
	return best, found
}

// brokerFiles are the Mosquitto directives that name a file or directory the broker reads.
var brokerFiles = map[string]bool{
	"certfile": true, "keyfile": true, "cafile": true, "capath": true, "crlfile": true, "dhparamfile": true,
	"password_file": true, "acl_file": true, "psk_file": true, "include_dir": true, "persistence_location": true,
	"pid_file": true, "plugin": true, "auth_plugin": true,
}

// brokerWritten are the directives whose file the broker or an operator writes at run time: a
// named volume may hold them. The others are configuration that comes from this repository.
var brokerWritten = map[string]bool{"password_file": true, "persistence_location": true, "pid_file": true}

// TestDockerCompose: the compose file starts a pair that can work. The broker's configuration
// has no loopback-only listener (the bridge reaches the broker over the compose network), every
// file it names is mounted (configuration from this repository, logins and persistence in
// volumes), the bridge's MQTT_URL names the broker service and one of its listeners, the bridge
// starts once the broker is healthy, both have health checks, and the ACL is in force.
func TestDockerCompose(t *testing.T) {
	data, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	broker, ok := c.Services["mosquitto"]
	if !ok {
		t.Fatal("no mosquitto service")
	}
	bridge, ok := c.Services["matrix2mqtt"]
	if !ok {
		t.Fatal("no matrix2mqtt service")
	}
	for name, svc := range c.Services {
		if svc.Healthcheck == nil || len(svc.Healthcheck.Test) == 0 {
			t.Errorf("service %s has no health check", name)
		}
		for _, m := range mounts(t, svc) {
			if m.bind {
				if _, err := os.Stat(m.source); err != nil {
					t.Errorf("service %s mounts %s, which is not in configs/: %v", name, m.source, err)
				}
			} else if _, ok := c.Volumes[m.source]; !ok {
				t.Errorf("service %s mounts the volume %s, which is not declared", name, m.source)
			}
		}
	}
	if bridge.DependsOn["mosquitto"].Condition != "service_healthy" {
		t.Errorf("the bridge starts before the broker is healthy: depends_on %+v", bridge.DependsOn)
	}

	// The configuration the broker runs with: the file its command names, mounted from here.
	confPath := regexp.MustCompile(`mosquitto -c (\S+?)'?$`).FindStringSubmatch(strings.TrimSpace(broker.Command))
	if confPath == nil {
		t.Fatalf("the broker's command %q names no configuration file", broker.Command)
	}
	brokerMounts := mounts(t, broker)
	confMount, ok := mountOf(brokerMounts, confPath[1])
	if !ok || !confMount.bind || confMount.target != confPath[1] {
		t.Fatalf("the broker's configuration %s is not mounted from this repository", confPath[1])
	}
	directives := readBrokerConf(t, confMount.source)

	var ports []string
	for _, d := range directives {
		switch {
		case d[0] == "listener":
			if len(d) < 2 {
				t.Fatalf("listener without a port: %v", d)
			}
			if len(d) > 2 {
				if ip := net.ParseIP(d[2]); d[2] == "localhost" || (ip != nil && ip.IsLoopback()) {
					t.Errorf("%s: %q listens on the broker container's own loopback, which the bridge container cannot reach",
						confMount.source, strings.Join(d, " "))
					continue
				}
			}
			ports = append(ports, d[1])
		case brokerFiles[d[0]]:
			if len(d) < 2 {
				t.Fatalf("%s without a path", d[0])
			}
			m, ok := mountOf(brokerMounts, d[1])
			switch {
			case !ok:
				t.Errorf("%s: %s %s is not mounted into the broker's container", confMount.source, d[0], d[1])
			case !m.bind && !brokerWritten[d[0]]:
				t.Errorf("%s: %s %s is in the volume %s, which has no such file until someone puts it there; mount it from this repository",
					confMount.source, d[0], d[1], m.source)
			case m.bind:
				host := filepath.Join(m.source, strings.TrimPrefix(d[1], m.target))
				if _, err := os.Stat(host); err != nil {
					t.Errorf("%s: %s %s: %v", confMount.source, d[0], d[1], err)
				}
			}
		}
	}
	has := func(name, value string) bool {
		for _, d := range directives {
			if d[0] == name && (value == "" || (len(d) > 1 && d[1] == value)) {
				return true
			}
		}
		return false
	}
	if !has("allow_anonymous", "false") || !has("password_file", "") || !has("acl_file", "") {
		t.Errorf("%s: the broker must require logins and an ACL (allow_anonymous false, password_file, acl_file)", confMount.source)
	}
	if acl, _ := mountOf(brokerMounts, aclPath(directives)); acl.source != "./mosquitto/matrix2mqtt.acl" {
		t.Errorf("the broker's ACL is %q, want ./mosquitto/matrix2mqtt.acl", acl.source)
	}

	u, err := url.Parse(bridge.Environment["MQTT_URL"])
	if err != nil {
		t.Fatalf("MQTT_URL: %v", err)
	}
	if _, ok := c.Services[u.Hostname()]; u.Hostname() != "mosquitto" || !ok {
		t.Errorf("the bridge's MQTT_URL %q does not name the broker service", bridge.Environment["MQTT_URL"])
	}
	found := false
	for _, p := range ports {
		found = found || p == u.Port()
	}
	if u.Scheme != "tcp" || !found {
		t.Errorf("the bridge's MQTT_URL %q is not a plain listener of the broker (listeners on ports %v)", bridge.Environment["MQTT_URL"], ports)
	}
	if bridge.Environment["MQTT_USERNAME"] != "matrix2mqtt" {
		t.Errorf("MQTT_USERNAME %q, want matrix2mqtt, the bridge's user in the ACL", bridge.Environment["MQTT_USERNAME"])
	}
}

// aclPath returns the broker's acl_file.
func aclPath(directives [][]string) string {
	for _, d := range directives {
		if d[0] == "acl_file" && len(d) > 1 {
			return path.Clean(d[1])
		}
	}
	return ""
}

// readBrokerConf returns the directives of a Mosquitto configuration file, each split in words.
func readBrokerConf(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.Fields(line))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
