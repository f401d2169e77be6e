package store

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

func TestRoomKeys(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		for _, kv := range []struct {
			key  string
			room id.RoomID
		}{{"guests", "!a:hs"}, {"garden", "!b:hs"}, {"guests", "!c:hs"}} {
			if err := s.SaveRoomKey(ctx, kv.key, kv.room); err != nil {
				t.Fatal(err)
			}
		}
		keys, err := s.RoomKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys["guests"] != "!c:hs" || keys["garden"] != "!b:hs" {
			t.Fatalf("keys = %v", keys)
		}
	})
}

func TestRoomUpgrades(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		if err := s.SaveRoomKey(ctx, "garden", "!old:hs"); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveRoomUpgrade(ctx, "!old:hs", "!new:hs"); err != nil {
			t.Fatal(err)
		}
		ups, err := s.RoomUpgrades(ctx)
		if err != nil || len(ups) != 1 || ups["!old:hs"] != "!new:hs" {
			t.Fatalf("upgrades = %v, %v", ups, err)
		}
		if keys, _ := s.RoomKeys(ctx); keys["garden"] != "!new:hs" {
			t.Fatalf("the key stayed with the old room: %v", keys)
		}
	})
}
