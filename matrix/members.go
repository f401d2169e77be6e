package matrix

import (
	"context"
	"fmt"
	"slices"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Members lists the joined members of roomID other than the bot, as the homeserver knows them
// now.
func (c *Client) Members(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	var resp *mautrix.RespJoinedMembers
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.JoinedMembers(ctx, roomID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the members of %s: %w", roomID, err)
	}
	var out []id.UserID
	for user := range resp.Joined {
		if user != c.cli.UserID {
			out = append(out, user)
		}
	}
	slices.Sort(out)
	return out, nil
}
