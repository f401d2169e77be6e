package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// dockerImage is the tag the test builds the Dockerfile as; a fixed one, so that the engine's
// layer cache makes the next build fast.
const dockerImage = "matrix2mqtt:integration-test"

// docker runs the docker client and returns its trimmed output.
func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the classic builder: Debian's docker.io has no buildx
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 30))
	}
	return strings.TrimSpace(string(out)), nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// requireDocker fails the test where no Docker engine answers: scripts/install-deps.sh installs
// and starts one, as it installs Mosquitto and Dendrite, which the other tests need as much.
func requireDocker(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("docker")
	if err == nil {
		_, err = docker(context.Background(), "info", "--format", "{{.ServerVersion}}")
	}
	if err != nil {
		t.Fatalf("no Docker engine to build and run the image (scripts/install-deps.sh installs docker.io and starts dockerd): %v", err)
	}
}

// TestDockerImage builds the Dockerfile as a user would (its base images made locally by
// scripts/docker-base-images.sh when no registry is reachable) and runs the image on the host
// network against the test Mosquitto and Dendrite: it comes online, sends, runs as non-root,
// keeps its database in the /data volume (a new container on the same volume is the same
// device), turns healthy by its own HEALTHCHECK, counts the send in its /metrics, and publishes
// offline on `docker stop`.
func TestDockerImage(t *testing.T) {
	requireDocker(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	base := exec.CommandContext(ctx, "../scripts/docker-base-images.sh")
	if out, err := base.CombinedOutput(); err != nil {
		t.Fatalf("failed to make the base images: %v\n%s", err, lastLines(string(out), 40))
	}
	baseDone := time.Now()
	// The build stage downloads modules: on the host network it reaches the module proxy. It is
	// tagged too, so that the layers of the last build stay cached while the untagged ones of
	// earlier builds (a gigabyte each) are pruned.
	for _, target := range []struct{ stage, tag string }{{"build", dockerImage + "-build"}, {"", dockerImage}} {
		args := []string{"build", "--network", "host", "--build-arg", "VERSION=integration-test", "-t", target.tag}
		if target.stage != "" {
			args = append(args, "--target", target.stage)
		}
		if _, err := docker(ctx, append(args, "..")...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := docker(ctx, "image", "prune", "-f"); err != nil {
		t.Logf("failed to prune the images of earlier builds: %v", err)
	}
	built := time.Now()

	name := fmt.Sprintf("m2m-docker-%d", time.Now().UnixNano())
	volume := name + "-data"
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := docker(context.Background(), "logs", "--tail", "60", name)
			t.Logf("container log:\n%s", logs)
		}
		_, _ = docker(context.Background(), "rm", "-f", name)
		_, _ = docker(context.Background(), "volume", "rm", "-f", volume)
	})

	bot := newUser(t, "dockerbot")
	alice := newUser(t, "dockeralice")
	topic := strings.ReplaceAll(name, "-", "")
	rec := newRecorder(t, topic)
	httpAddr := freeAddr(t)
	run := func() {
		t.Helper()
		args := []string{"run", "-d", "--name", name, "--network", "host", "-v", volume + ":/data",
			// The image's own HEALTHCHECK command, checked every second instead of every 30 s so
			// that the test need not wait.
			"--health-interval", "1s", "--health-start-period", "60s"}
		for k, v := range map[string]string{
			"MATRIX_HOMESERVER": env.HomeserverURL, "MATRIX_USER_ID": bot.UserID, "MATRIX_PASSWORD": bot.Password,
			"MATRIX_SYNC_TIMEOUT": "5s", "MQTT_URL": env.MQTTURL, "MQTT_CLIENT_ID": topic, "MQTT_BASE_TOPIC": topic,
			"AUTO_JOIN": alice.UserID, "HA_DISCOVERY": "false", "HTTP_LISTEN": httpAddr,
		} {
			args = append(args, "-e", k+"="+v)
		}
		if _, err := docker(ctx, append(args, dockerImage)...); err != nil {
			t.Fatal(err)
		}
	}
	run()

	info := rec.wait(60*time.Second, "bridge info", func(m message) bool {
		return m.Topic == topic+"/bridge/info" && strings.Contains(string(m.Payload), bot.UserID)
	}).json(t)
	rec.wait(5*time.Second, "online", func(m message) bool {
		return m.Topic == topic+"/bridge/state" && string(m.Payload) == "online"
	})
	online := time.Now()

	room := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot.id()}})
	rec.wait(30*time.Second, "the bot's join", func(m message) bool {
		return m.Topic == topic+"/bridge/rooms" && strings.Contains(string(m.Payload), room.String())
	})
	rec.publish(topic+"/bridge/request/send", 1, fmt.Sprintf(`{"id":"docker-1","to":%q,"text":"from the container"}`, room))
	resp := rec.wait(30*time.Second, "the send response", func(m message) bool {
		return m.Topic == topic+"/bridge/response/send" && strings.Contains(string(m.Payload), `"docker-1"`)
	}).json(t)
	data, _ := resp["data"].(map[string]any)
	if resp["status"] != "ok" || data == nil {
		t.Fatalf("send: %v", resp)
	}
	if body := alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage().Body; body != "from the container" {
		t.Fatalf("alice sees %q", body)
	}

	if uid, err := docker(ctx, "exec", name, "id", "-u"); err != nil || uid == "0" {
		t.Fatalf("the bridge runs as uid %q (%v), want non-root", uid, err)
	}
	if owner, err := docker(ctx, "exec", name, "stat", "-c", "%U %a", "/data/matrix2mqtt.db"); err != nil || owner != "matrix2mqtt 600" {
		t.Fatalf("/data/matrix2mqtt.db: %q %v, want owned by matrix2mqtt, mode 600", owner, err)
	}
	eventually(t, 60*time.Second, func() error {
		status, err := docker(ctx, "inspect", "-f", "{{.State.Health.Status}}", name)
		if err != nil || status != "healthy" {
			return fmt.Errorf("health %q %v", status, err)
		}
		return nil
	})
	healthy := time.Now()
	if code, metrics := get(t, "http://"+httpAddr+"/metrics", ""); code != 200 ||
		sample(metrics, `matrix2mqtt_requests_total{action="send",outcome="ok"}`) != 1 {
		t.Errorf("the container's /metrics: %d, the send counted %v times, want once",
			code, sample(metrics, `matrix2mqtt_requests_total{action="send",outcome="ok"}`))
	}

	if _, err := docker(ctx, "stop", "-t", "30", name); err != nil {
		t.Fatal(err)
	}
	rec.wait(10*time.Second, "offline", func(m message) bool {
		return m.Topic == topic+"/bridge/state" && string(m.Payload) == "offline"
	})
	if code, err := docker(ctx, "inspect", "-f", "{{.State.ExitCode}}", name); err != nil || code != "0" {
		t.Fatalf("exit code %q %v after docker stop, want 0", code, err)
	}
	stopped := time.Now()

	// A new container on the same volume finds the session: the same device.
	if _, err := docker(ctx, "rm", name); err != nil {
		t.Fatal(err)
	}
	infos := len(rec.all(topic + "/bridge/info"))
	run()
	eventually(t, 60*time.Second, func() error {
		all := rec.all(topic + "/bridge/info")
		if len(all) <= infos {
			return fmt.Errorf("no new info yet")
		}
		if again := all[len(all)-1].json(t); again["device_id"] != info["device_id"] {
			return fmt.Errorf("device %v after the restart, was %v", again["device_id"], info["device_id"])
		}
		return nil
	})
	report(t, "Docker image: base images ready in %s, build %s, online %s after start, healthy %s later, stopped with offline in %s; %s in all",
		baseDone.Sub(start).Round(time.Second), built.Sub(baseDone).Round(time.Second), online.Sub(built).Round(time.Second),
		healthy.Sub(online).Round(time.Second), stopped.Sub(healthy).Round(time.Second), time.Since(start).Round(time.Second))
}

// TestComposeFileIsValid: Docker Compose itself (Debian's docker-compose) reads
// configs/docker-compose.yml as a user starts it, with a matrix2mqtt.env beside the repository's
// configs; configs/compose_test.go checks what the pair needs to work.
func TestComposeFileIsValid(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../configs", root).CombinedOutput(); err != nil {
		t.Fatalf("failed to copy configs: %v: %s", err, out)
	}
	if err := os.WriteFile(root+"/matrix2mqtt.env", []byte("MATRIX_HOMESERVER=http://127.0.0.1:8008\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-compose", "-p", "matrix2mqtt", "-f", root+"/configs/docker-compose.yml", "config")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v: %s", err, out)
	}
	for _, want := range []string{"mosquitto:", "matrix2mqtt:", "MQTT_URL: tcp://mosquitto:1883", "healthcheck"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("docker-compose config has no %q:\n%s", want, out)
		}
	}
}
