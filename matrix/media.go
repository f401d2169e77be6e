package matrix

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Upload uploads a file for a message to roomID, encrypted (referred to by `file`, not `url`)
// when the room is; a room the bridge cannot encrypt for, or whose state it cannot read, is
// refused. With no roomID the file is uploaded unencrypted (e.g. a room avatar).
func (c *Client) Upload(ctx context.Context, roomID id.RoomID, data []byte, mimetype, filename string) (ref media.Ref, err error) {
	encrypted, err := c.IsEncrypted(ctx, roomID)
	if err != nil {
		return media.Ref{}, err
	}
	if encrypted && c.crypto == nil {
		return media.Ref{}, fmt.Errorf("failed to upload for %s: %w", roomID, ErrEncryptionUnavailable)
	}
	err = c.retryAuth(ctx, func() (err error) {
		ref, err = c.media.Upload(ctx, data, mimetype, filename, encrypted)
		return err
	})
	return ref, err
}

// Download fetches a file through the authenticated media API, at most maxBytes, and decrypts
// it (checking its hash) when file is given.
func (c *Client) Download(ctx context.Context, uri id.ContentURIString, file *attachment.EncryptedFile, maxBytes int64) ([]byte, error) {
	var data []byte
	err := c.retryAuth(ctx, func() (err error) {
		data, err = c.media.Download(ctx, uri, file, maxBytes)
		return err
	})
	return data, err
}

// IsEncrypted tells whether the room is encrypted, as far as the bot's state store knows.
func (c *Client) IsEncrypted(ctx context.Context, roomID id.RoomID) (bool, error) {
	encrypted, err := c.state.IsEncrypted(ctx, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to tell whether %s is encrypted: %w", roomID, err)
	}
	return encrypted, nil
}
