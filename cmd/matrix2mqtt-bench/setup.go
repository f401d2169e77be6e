package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var nan = math.NaN()

// account is a Matrix user the benchmark uses, with a client for one of its devices.
type account struct {
	userID   string
	password string
	cli      *mx
}

var errNeedsStack = errors.New("needs accounts that the benchmark registers itself: run without -homeserver")

// account registers a user on the benchmark's Dendrite, or logs in to a given account.
func (b *bench) account(ctx context.Context, role string) (*account, error) {
	if b.env == nil {
		var user, pass string
		switch role {
		case "bot":
			user, pass = b.o.botUser, b.o.botPass
		case "peer":
			user, pass = b.o.peerUser, b.o.peerPass
		default:
			return nil, errNeedsStack
		}
		c, err := login(ctx, b.hs, user, pass, "matrix2mqtt-bench", b.hc)
		if err != nil {
			return nil, fmt.Errorf("failed to log in %s: %w", user, err)
		}
		return &account{userID: c.userID, password: pass, cli: c}, nil
	}
	u, err := b.env.RegisterUser(ctx, role+b.tag)
	if err != nil {
		return nil, err
	}
	return &account{userID: u.UserID, password: u.Password, cli: &mx{hs: b.hs, userID: u.UserID, token: u.AccessToken, deviceID: u.DeviceID, http: b.hc}}, nil
}

// running is a started bridge with its MQTT monitor.
type running struct {
	proc    *bridgeProc
	mon     *monitor
	base    string
	info    online
	toState time.Duration // process start → live `online`
	toInfo  time.Duration // process start → live bridge/info
}

// bridgeEnv is the environment of a bridge of this run: the given account, its own base topic
// and client ID, warnings only in its log.
func (b *bench) bridgeEnv(name, hs, userID, password, dataDir string, extra map[string]string) map[string]string {
	base := "bench" + b.tag + name
	env := map[string]string{
		"MATRIX_HOMESERVER":   hs,
		"MATRIX_USER_ID":      userID,
		"MATRIX_PASSWORD":     password,
		"MATRIX_SYNC_TIMEOUT": "30s",
		"MQTT_URL":            b.mqttURL,
		"MQTT_CLIENT_ID":      base,
		"MQTT_BASE_TOPIC":     base,
		"DATA_DIR":            dataDir,
		"LOG_LEVEL":           "warn",
		"LOG_FORMAT":          "json",
		"SHUTDOWN_TIMEOUT":    "5s",
	}
	if hs == b.hs {
		for k, v := range b.o.bridgeEnv {
			env[k] = v
		}
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// startBridge starts a bridge with env and waits until it is online: `online` on bridge/state
// and its bridge/info, both published live after the start.
func (b *bench) startBridge(name string, env map[string]string) (*running, error) {
	base := env["MQTT_BASE_TOPIC"]
	mon, err := newMonitor(b.mqttURL, base)
	if err != nil {
		return nil, err
	}
	r := &running{mon: mon, base: base}
	r.proc = &bridgeProc{name: name, env: env, inproc: b.o.inproc, cpus: b.o.cpus, logPath: filepath.Join(b.dir, "bridge-"+name+".log")}
	if err := b.restart(r); err != nil {
		mon.close()
		return nil, err
	}
	return r, nil
}

// restart starts the bridge process of r (again) and waits until it is online.
func (b *bench) restart(r *running) error {
	if err := r.proc.start(); err != nil {
		return err
	}
	b.bridges = append(b.bridges, r.proc)
	var err error
	r.toState, r.toInfo, r.info, err = r.mon.waitOnline(r.proc.started, 90*time.Second)
	if err != nil {
		_ = b.stopBridge(r)
		return fmt.Errorf("bridge %s: %w (log: %s)", r.proc.name, err, r.proc.logPath)
	}
	b.debugf("bridge %s online after %s (info after %s)", r.proc.name, r.toState.Round(time.Millisecond), r.toInfo.Round(time.Millisecond))
	return nil
}

func (b *bench) stopBridge(r *running) error {
	err := r.proc.stop()
	for i, p := range b.bridges {
		if p == r.proc {
			b.bridges = append(b.bridges[:i], b.bridges[i+1:]...)
			break
		}
	}
	return err
}

func (b *bench) closeBridge(r *running) error {
	err := b.stopBridge(r)
	r.mon.close()
	return err
}

// waitJoined waits until user is joined to every room, as the room creator sees it.
func waitJoined(ctx context.Context, creator *mx, rooms []string, user string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, room := range rooms {
		for {
			members, err := creator.joinedMembers(ctx, room)
			if err == nil {
				if _, ok := members[user]; ok {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not join %s within %s (%v)", user, room, limit, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// sharedRooms has owner create n rooms with invitee invited, and joiner (invitee's client)
// join them, with some concurrency; it returns the rooms and how long that took.
func sharedRooms(ctx context.Context, owner, joiner *mx, n int, prefix string, encrypted bool) ([]string, time.Duration, error) {
	start := time.Now()
	rooms := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(n, 8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				room, err := owner.createRoom(ctx, fmt.Sprintf("%s %d", prefix, i), []string{joiner.userID}, encrypted)
				if err == nil {
					err = joiner.join(ctx, room)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				rooms[i] = room
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	return rooms, time.Since(start), ctx.Err()
}

// roomsListed waits until the bridge's bridge/rooms (published after since) lists at least n
// rooms, and the encrypted ones among want as encrypted.
func waitRooms(m *monitor, since time.Time, n int, encrypted []string, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for {
		if m.roomCount(since) >= n && allEncrypted(m.latest("bridge/rooms"), encrypted) {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("bridge/rooms did not list %d rooms within %s (has %d)", n, limit, m.roomCount(since))
		}
		select {
		case <-m.news:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allEncrypted(payload []byte, rooms []string) bool {
	if len(rooms) == 0 {
		return true
	}
	var list []struct {
		ID        string `json:"room_id"`
		Encrypted bool   `json:"encrypted"`
	}
	if json.Unmarshal(payload, &list) != nil {
		return false
	}
	enc := map[string]bool{}
	for _, r := range list {
		enc[r.ID] = r.Encrypted
	}
	for _, r := range rooms {
		if !enc[r] {
			return false
		}
	}
	return true
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	return s
}
