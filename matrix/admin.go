package matrix

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// MembershipChange is what ChangeMembership does to a user.
type MembershipChange string

// The membership changes of the invite, kick, ban and unban actions.
const (
	Invite MembershipChange = "invite"
	Kick   MembershipChange = "kick"
	Ban    MembershipChange = "ban"
	Unban  MembershipChange = "unban"
)

// requireJoined reports ErrUnknownTarget for a room the bot is not in. A room that sync has not
// shown joined yet (a join a moment ago) is asked of the homeserver.
func (c *Client) requireJoined(ctx context.Context, roomID id.RoomID) error {
	if c.rooms.isJoined(ctx, roomID) {
		return nil
	}
	var own event.MemberEventContent
	err := c.retryAuth(ctx, func() error {
		return c.cli.StateEvent(ctx, roomID, event.StateMember, c.cli.UserID.String(), &own)
	})
	if err == nil && own.Membership == event.MembershipJoin {
		if c.rooms.joined(ctx, roomID) {
			c.markRoomsChanged()
		}
		return nil
	}
	return fmt.Errorf("%w: the bot is not in room %s", ErrUnknownTarget, roomID)
}

// ChangeMembership invites, kicks, bans or unbans user in roomID.
func (c *Client) ChangeMembership(ctx context.Context, roomID id.RoomID, change MembershipChange, user id.UserID, reason string) error {
	if err := c.requireJoined(ctx, roomID); err != nil {
		return err
	}
	err := c.retryAuth(ctx, func() (err error) {
		switch change {
		case Invite:
			_, err = c.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: user, Reason: reason})
		case Kick:
			_, err = c.cli.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: user, Reason: reason})
		case Ban:
			_, err = c.cli.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: user, Reason: reason})
		case Unban:
			_, err = c.cli.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: user, Reason: reason})
		default:
			err = fmt.Errorf("unknown membership change %q", change)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to %s %s in %s: %w", change, user, roomID, err)
	}
	return nil
}

// PowerLevels returns the power levels of a room the bot is in.
func (c *Client) PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	if err := c.requireJoined(ctx, roomID); err != nil {
		return nil, err
	}
	var pl event.PowerLevelsEventContent
	err := c.retryAuth(ctx, func() error { return c.cli.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl) })
	if err != nil {
		return nil, fmt.Errorf("failed to get power levels of %s: %w", roomID, err)
	}
	return &pl, nil
}

// SyncedPowerLevels returns a room's power levels as the sync brought them, and asks the
// homeserver only when the sync has not (yet): for checks on inbound events, which must not fail
// on a passing network error.
func (c *Client) SyncedPowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	pl, err := c.state.GetPowerLevels(ctx, roomID)
	if err == nil && pl != nil {
		return pl, nil
	}
	if err != nil {
		c.log.Warn().Err(err).Stringer("room_id", roomID).Msg("Failed to read synced power levels; asking the homeserver")
	}
	return c.PowerLevels(ctx, roomID)
}

// SetState sends a state event into a room the bot is in.
func (c *Client) SetState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any) (id.EventID, error) {
	if err := c.requireJoined(ctx, roomID); err != nil {
		return "", err
	}
	var resp *mautrix.RespSendEvent
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.SendStateEvent(ctx, roomID, evtType, stateKey, content)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to set %s in %s: %w", evtType.Type, roomID, err)
	}
	return resp.EventID, nil
}

// Members lists the members of a room the bot is in, with the given membership only unless it
// is empty.
func (c *Client) Members(ctx context.Context, roomID id.RoomID, membership event.Membership) ([]wire.Member, error) {
	if err := c.requireJoined(ctx, roomID); err != nil {
		return nil, err
	}
	var resp *mautrix.RespMembers
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.Members(ctx, roomID, mautrix.ReqMembers{Membership: membership})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list members of %s: %w", roomID, err)
	}
	out := make([]wire.Member, 0, len(resp.Chunk))
	for _, evt := range resp.Chunk {
		if evt.StateKey == nil {
			continue
		}
		_ = evt.Content.ParseRaw(evt.Type)
		m := evt.Content.AsMember()
		out = append(out, wire.Member{UserID: id.UserID(*evt.StateKey), DisplayName: m.Displayname, Membership: string(m.Membership)})
	}
	return out, nil
}

// CheckUser reports ErrUnknownTarget for a user the homeserver says does not exist. Other
// failures of the look-up (a remote server that does not answer) are no reason to refuse: the
// homeserver has the last word on the request itself.
func (c *Client) CheckUser(ctx context.Context, user id.UserID) error {
	err := c.retryAuth(ctx, func() (err error) {
		_, err = c.cli.GetProfile(ctx, user)
		return err
	})
	if errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("%w: user %s does not exist", ErrUnknownTarget, user)
	}
	if err != nil {
		c.log.Debug().Err(err).Stringer("user_id", user).Msg("Failed to look up user; going on")
	}
	return nil
}

// CreateRoom creates a room. Unless encrypted says otherwise, a private room (every preset but
// public_chat) is encrypted when E2EE is on. A direct chat is recorded in m.direct.
func (c *Client) CreateRoom(ctx context.Context, req *mautrix.ReqCreateRoom, encrypted *bool) (id.RoomID, error) {
	encrypt := c.crypto != nil && req.Preset != "public_chat"
	if encrypted != nil {
		encrypt = *encrypted
	}
	if encrypt {
		if c.crypto == nil {
			return "", fmt.Errorf("failed to create an encrypted room: %w", ErrEncryptionUnavailable)
		}
		req.InitialState = append(req.InitialState, &event.Event{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		})
	}
	var resp *mautrix.RespCreateRoom
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.CreateRoom(ctx, req)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to create room: %w", err)
	}
	c.rooms.joined(ctx, resp.RoomID)
	c.markRoomsChanged()
	if req.IsDirect && len(req.Invite) == 1 {
		if err := c.rooms.addDirect(ctx, req.Invite[0], resp.RoomID); err != nil {
			c.log.Warn().Err(err).Msg("Failed to record direct chat")
		}
	}
	return resp.RoomID, nil
}
