package bridge

import (
	"context"

	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
	mxmedia "github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// countedMedia is the Matrix client of the actions, with the bytes of its uploads and downloads
// counted in matrix2mqtt_media_bytes_total.
type countedMedia struct {
	actions.Matrix
	metrics *metrics.Metrics
}

// Upload uploads and counts the file's bytes.
func (c countedMedia) Upload(ctx context.Context, roomID id.RoomID, data []byte, mimetype, filename string) (mxmedia.Ref, error) {
	ref, err := c.Matrix.Upload(ctx, roomID, data, mimetype, filename)
	if err == nil {
		c.metrics.MediaBytes(metrics.MediaUpload, len(data))
	}
	return ref, err
}

// Download downloads and counts the file's bytes.
func (c countedMedia) Download(ctx context.Context, uri id.ContentURIString, file *attachment.EncryptedFile, maxBytes int64) ([]byte, error) {
	data, err := c.Matrix.Download(ctx, uri, file, maxBytes)
	if err == nil {
		c.metrics.MediaBytes(metrics.MediaDownload, len(data))
	}
	return data, err
}
