package rooms

import (
	"context"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// file is the media as a send_media request, with the broadcast's spooled file and mentions.
func (r *Broadcast) file() *sendmedia.SendMedia {
	return &sendmedia.SendMedia{FileRequest: *r.Media, Mentions: r.Mentions, Spooled: r.Spooled}
}

// Prepare keeps a file that came with the request (data or path) in the spool, out of the
// outbox row, after checking it against MEDIA_DIRS, MEDIA_HOSTS and MEDIA_MAX_BYTES.
func (r *Broadcast) Prepare(env *actions.Env) *wire.Error {
	if r.Media == nil {
		return nil
	}
	f := r.file()
	if err := f.ValidateFile(); err != nil { // decodes data
		return err
	}
	if err := f.Prepare(env); err != nil {
		return err
	}
	r.Spooled, *r.Media = f.Spooled, f.FileRequest // the file spooled, a thumbnail's path read
	return nil
}

// Finished removes the spooled file once the broadcast is answered and out of the outbox.
func (r *Broadcast) Finished(env *actions.Env) error {
	if r.Spooled == "" || env.Media == nil {
		return nil
	}
	return env.Media.RemoveSpool(r.Spooled)
}

// Upload modes: one upload serves every room of its mode.
const (
	modePlain     = "plain"
	modeEncrypted = "encrypted"
)

// mediaUpload is the message of one upload mode, ready for every room of that mode, or the
// error that failed the upload for good (then every room of that mode gets it).
type mediaUpload struct {
	Content *event.MessageEventContent `json:"content,omitempty"`
	Error   *wire.Error                `json:"error,omitempty"`
}

// mediaContent returns the message for roomID: uploaded once per mode (unencrypted for
// plain rooms; encrypted with one key for every encrypted room), and saved in the progress
// before any room gets it, so that no retry or restart uploads again. data is loaded once
// per attempt and kept in *data.
func (r *Broadcast) mediaContent(ctx context.Context, d *actions.Delivery, p *broadcastProgress, roomID id.RoomID, data *[]byte) (*event.MessageEventContent, error) {
	encrypted, err := d.Matrix.IsEncrypted(ctx, roomID)
	if err != nil {
		return nil, err
	}
	mode := modePlain
	if encrypted {
		mode = modeEncrypted
	}
	if up, ok := p.Uploads[mode]; ok {
		if up.Error != nil {
			return nil, up.Error
		}
		return up.Content, nil
	}
	f := r.file()
	var up mediaUpload
	if *data == nil {
		*data, err = f.Load(ctx, d)
	}
	if err == nil {
		up.Content, err = f.Upload(ctx, d, roomID, *data)
	}
	if err != nil {
		if out := actions.Classify(err); out.Retry || ctx.Err() != nil {
			return nil, err
		}
		up.Error = actions.Classify(err).Err
	}
	if p.Uploads == nil {
		p.Uploads = map[string]mediaUpload{}
	}
	p.Uploads[mode] = up
	if err := d.Progress.Save(ctx, p); err != nil {
		return nil, err
	}
	if up.Error != nil {
		return nil, up.Error
	}
	return up.Content, nil
}
