package inbound

import (
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// MediaDownloads holds media messages back until their file is in MEDIA_DOWNLOAD_DIR: each
// becomes a durable media_download that downloads the file and then publishes the message.
type MediaDownloads struct{}

// Hold takes over a message with a file.
func (MediaDownloads) Hold(ev matrix.Event, topic string) (outbox.Job, bool) {
	msg, ok := ev.Payload.(*wire.Message)
	if !ok || ev.Kind != wire.KindMessage || msg.Media == nil || msg.Media.MXC == "" {
		return outbox.Job{}, false
	}
	// The key makes the job once per event: a batch handed over again does not queue it twice.
	return outbox.Job{Action: sendmedia.ActionMediaDownload, MQTTKey: "media_download:" + ev.ID.String(),
		Request: &sendmedia.MediaDownload{Topic: topic, Message: msg, File: msg.Media.File}}, true
}
