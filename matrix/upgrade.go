package matrix

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// followUpgrades follows the room upgrades that tombstones announce.
func (c *Client) followUpgrades(ctx context.Context, h Handler, tombstones []*event.Event) {
	for _, evt := range tombstones {
		newRoom := evt.Content.AsTombstone().ReplacementRoom
		if newRoom == "" {
			continue
		}
		notice := wire.Notice{RoomID: evt.RoomID, Sender: evt.Sender, ReplacementRoom: newRoom}
		if err := c.followUpgrade(ctx, evt.RoomID, newRoom, evt.Sender.Homeserver()); err != nil {
			c.log.Warn().Err(err).Stringer("room_id", evt.RoomID).Stringer("replacement_room", newRoom).Msg("Failed to follow room upgrade")
			notice.Type, notice.Message = "room_upgrade_failed", err.Error()
		} else {
			c.log.Info().Stringer("room_id", evt.RoomID).Stringer("replacement_room", newRoom).Msg("Followed room upgrade")
			notice.Type = "room_upgraded"
		}
		h.HandleNotice(ctx, notice)
	}
}

// followUpgrade joins newRoom through the server of the tombstone's sender, checks that its
// predecessor is oldRoom, and tells Options.OnRoomUpgraded.
func (c *Client) followUpgrade(ctx context.Context, oldRoom, newRoom id.RoomID, via string) error {
	err := c.retryAuth(ctx, func() error {
		_, err := c.cli.JoinRoom(ctx, newRoom.String(), &mautrix.ReqJoinRoom{Via: []string{via}})
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to join the replacement room: %w", err)
	}
	if c.rooms.joined(ctx, newRoom) {
		c.markRoomsChanged()
	}
	var create event.CreateEventContent
	if err := c.retryAuth(ctx, func() error { return c.cli.StateEvent(ctx, newRoom, event.StateCreate, "", &create) }); err != nil {
		return fmt.Errorf("failed to read the replacement room's creation: %w", err)
	}
	if create.Predecessor == nil || create.Predecessor.RoomID != oldRoom {
		return fmt.Errorf("the replacement room %s does not name %s as its predecessor; requests keep going to the old room", newRoom, oldRoom)
	}
	if c.opts.OnRoomUpgraded != nil {
		c.opts.OnRoomUpgraded(ctx, oldRoom, newRoom)
	}
	return nil
}
