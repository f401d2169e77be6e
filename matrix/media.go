package matrix

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Upload uploads a file for a message to roomID: encrypted when the room is, so that the
// message refers to it by `file` instead of `url`. It refuses a room the bridge cannot encrypt
// for. With no roomID the file is uploaded unencrypted (public state such as a room avatar).
func (c *Client) Upload(ctx context.Context, roomID id.RoomID, data []byte, mimetype, filename string) (media.Ref, error) {
	encrypted, _ := c.state.IsEncrypted(ctx, roomID)
	if encrypted && c.crypto == nil {
		return media.Ref{}, fmt.Errorf("failed to upload for %s: %w", roomID, ErrEncryptionUnavailable)
	}
	var ref media.Ref
	err := c.retryAuth(ctx, func() (err error) {
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
