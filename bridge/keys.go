package bridge

import (
	"context"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// roomKeys knows the friendly names of targets and which room each stands for, so inbound
// topics use `<base>/room/<friendly name>/…` where there is one.
type roomKeys struct {
	targets Targets

	mu     sync.Mutex
	byRoom map[id.RoomID]string
}

func newRoomKeys(targets Targets) *roomKeys {
	k := &roomKeys{targets: targets, byRoom: map[id.RoomID]string{}}
	for _, target := range targets {
		if strings.HasPrefix(target, "!") {
			k.remember(target, id.RoomID(target))
		}
	}
	return k
}

// expand returns the Matrix target a friendly name stands for, or target itself.
func (k *roomKeys) expand(target string) (string, bool) {
	if v, ok := k.targets[target]; ok {
		return v, true
	}
	return target, false
}

// remember records that target resolved to roomID.
// When several names stand for one room, the first in sort order is its key.
func (k *roomKeys) remember(target string, roomID id.RoomID) {
	for _, name := range k.names() {
		if k.targets[name] == target {
			k.mu.Lock()
			if old, ok := k.byRoom[roomID]; !ok || name < old {
				k.byRoom[roomID] = name
			}
			k.mu.Unlock()
			return
		}
	}
}

// learn resolves the aliases and existing DMs of friendly names, without creating anything.
func (k *roomKeys) learn(ctx context.Context, mc *matrix.Client) {
	for _, target := range k.targets {
		switch target[0] {
		case '#':
			if roomID, err := mc.Resolve(ctx, target); err == nil {
				k.remember(target, roomID)
			}
		case '@':
			if roomID, ok := mc.DirectRoom(ctx, id.UserID(target)); ok {
				k.remember(target, roomID)
			}
		}
	}
}

// key is the topic segment for roomID: its friendly name, else the room ID made topic-safe.
func (k *roomKeys) key(roomID id.RoomID) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if name, ok := k.byRoom[roomID]; ok {
		return name
	}
	return mqtt.SafeSegment(string(roomID))
}

// name returns roomID's friendly name, if it has one.
func (k *roomKeys) name(roomID id.RoomID) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	name, ok := k.byRoom[roomID]
	return name, ok
}

func (k *roomKeys) names() []string {
	names := make([]string, 0, len(k.targets))
	for name := range k.targets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// RoomInfo is one entry of `<base>/bridge/rooms`.
type RoomInfo struct {
	matrix.Room
	Key string `json:"key"`
}

func (k *roomKeys) annotate(rooms []matrix.Room) []RoomInfo {
	out := make([]RoomInfo, len(rooms))
	for i, r := range rooms {
		out[i] = RoomInfo{Room: r, Key: k.key(r.ID)}
	}
	return out
}
