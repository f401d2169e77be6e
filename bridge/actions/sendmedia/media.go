// Package sendmedia is the media family of actions: send_media, and the internal download of inbound media.
package sendmedia

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	mxmedia "github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Media are the actions that send files.
var Media = []actions.Spec{
	{Name: "send_media", Help: "sends an image, video, audio, voice message or file (from data, path, url or mxc)",
		New: func() actions.Request { return &SendMedia{} }, Shortcut: sendMediaShortcut, LargePayload: true},
	{Name: ActionMediaDownload, Help: "downloads the file of an inbound media message, then publishes the message",
		New: func() actions.Request { return &MediaDownload{} }, Internal: true},
}

// ActionMediaDownload downloads an inbound message's file to MEDIA_DOWNLOAD_DIR and then
// publishes the message.
const ActionMediaDownload = "media_download"

// maxWaveform bounds the points of a voice message's waveform.
const maxWaveform = 1024

// maxDimension bounds `width` and `height`.
const maxDimension = 1 << 16

// FileRequest is a file as a request gives it: exactly one source, what it is, and its caption.
// send_media and broadcast's `media` take it alike.
type FileRequest struct {
	Data string              `json:"data,omitempty"`
	Path string              `json:"path,omitempty"`
	URL  string              `json:"url,omitempty"`
	MXC  id.ContentURIString `json:"mxc,omitempty"`

	Kind            string `json:"kind,omitempty"`
	Mimetype        string `json:"mimetype,omitempty"`
	Filename        string `json:"filename,omitempty"`
	Caption         string `json:"caption,omitempty"`
	CaptionMarkdown string `json:"caption_markdown,omitempty"`
	CaptionHTML     string `json:"caption_html,omitempty"`
	// Thumbnail replaces the thumbnail the bridge would make (thumbnail.go).
	Thumbnail *Thumbnail `json:"thumbnail,omitempty"`
}

// CheckMentions checks mentions, and the users that the pills of the caption link to, against
// ALLOWED_TARGETS; prefix names the file request in errors ("media." in a broadcast).
func (f *FileRequest) CheckMentions(t actions.Targets, mentions []string, prefix string) *wire.Error {
	return actions.CheckMentions(t, mentions, actions.Markup{Field: prefix + "caption_markdown", Text: f.CaptionMarkdown, Markdown: true},
		actions.Markup{Field: prefix + "caption_html", Text: f.CaptionHTML})
}

// SendMedia is the `send_media` action.
type SendMedia struct {
	actions.Common
	actions.To
	FileRequest
	DurationMS int        `json:"duration_ms,omitempty"`
	Width      int        `json:"width,omitempty"`
	Height     int        `json:"height,omitempty"`
	Waveform   []int      `json:"waveform,omitempty"`
	ReplyTo    id.EventID `json:"reply_to,omitempty"`
	Thread     id.EventID `json:"thread,omitempty"`
	Mentions   []string   `json:"mentions,omitempty"`
	actions.Timing
	actions.Choices

	// Spooled names the file kept for the outbox (set by Prepare, never from MQTT).
	Spooled string `json:"spooled,omitempty" wire:"own"`

	raw     []byte // the payload of the binary shortcut
	decoded []byte // Data, decoded
}

// sendMediaShortcut takes `<base>/send_media/<target>`: the payload is the file itself.
func sendMediaShortcut(target string, payload []byte) (actions.Request, *wire.Error) {
	r := &SendMedia{raw: payload}
	r.To.To = target
	if len(payload) == 0 {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "the payload is empty: publish the file itself")
	}
	return r, nil
}

// Validate checks the fields; the source is checked against the allowlists by Prepare.
func (r *SendMedia) Validate(t actions.Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if err := r.ValidateFile(); err != nil {
		return err
	}
	if err := actions.CheckEventIDs([]actions.EventField{{Name: "reply_to", Value: r.ReplyTo}, {Name: "thread", Value: r.Thread}}); err != nil {
		return err
	}
	if err := r.CheckMentions(t, r.Mentions, ""); err != nil {
		return err
	}
	if err := r.Choices.Validate(t); err != nil {
		return err
	}
	return r.Timing.Validate()
}

// ValidateFile checks the source, the description of the file and its caption (broadcast's
// media uses it too).
func (r *SendMedia) ValidateFile() *wire.Error {
	sources := actions.CountGiven(r.Data, r.Path, r.URL, string(r.MXC))
	if r.raw != nil {
		sources++
	}
	if sources != 1 {
		return wire.Errorf(wire.CodeInvalidRequest, "exactly one of 'data', 'path', 'url' or 'mxc' is required")
	}
	if r.Data != "" {
		var err error
		if r.decoded, err = base64.StdEncoding.DecodeString(r.Data); err != nil {
			if r.decoded, err = base64.RawStdEncoding.DecodeString(r.Data); err != nil {
				return wire.Errorf(wire.CodeInvalidRequest, "field 'data' is not base64")
			}
		}
	}
	if r.MXC != "" {
		if _, err := r.MXC.Parse(); err != nil {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'mxc' must be an mxc:// URI, not %q", r.MXC)
		}
	}
	if r.Kind != "" && !slices.Contains(media.Kinds, r.Kind) {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'kind' must be one of %s, not %q", strings.Join(media.Kinds, ", "), r.Kind)
	}
	if major, minor, ok := strings.Cut(r.Mimetype, "/"); r.Mimetype != "" && (!ok || major == "" || minor == "" || strings.ContainsAny(r.Mimetype, " ;\"")) {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'mimetype' must be a type such as image/jpeg, not %q", r.Mimetype)
	}
	if len(r.Filename) > 255 || strings.ContainsAny(r.Filename, "/\\\x00") {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'filename' must be a file name without directories, at most 255 bytes")
	}
	if actions.CountGiven(r.Caption, r.CaptionMarkdown, r.CaptionHTML) > 1 {
		return wire.Errorf(wire.CodeInvalidRequest, "at most one of 'caption', 'caption_markdown' or 'caption_html' is allowed")
	}
	if n := len(r.Caption) + len(r.CaptionMarkdown) + len(r.CaptionHTML); n > actions.MaxBodyBytes/2 {
		return wire.Errorf(wire.CodeTooLarge, "the caption is %d bytes; at most %d fit in a actions.Matrix event", n, actions.MaxBodyBytes/2)
	}
	if r.DurationMS < 0 || r.DurationMS > actions.MaxDelayS*1000 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'duration_ms' must be between 0 and %d", actions.MaxDelayS*1000)
	}
	for _, dim := range []struct {
		name  string
		value int
	}{{"width", r.Width}, {"height", r.Height}} {
		if dim.value < 0 || dim.value > maxDimension {
			return wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be between 0 and %d, not %d", dim.name, maxDimension, dim.value)
		}
	}
	if (r.Width == 0) != (r.Height == 0) {
		return wire.Errorf(wire.CodeInvalidRequest, "fields 'width' and 'height' go together: give both or neither")
	}
	if len(r.Waveform) > maxWaveform || slices.ContainsFunc(r.Waveform, func(v int) bool { return v < 0 || v > 1024 }) {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'waveform' takes at most %d values between 0 and 1024", maxWaveform)
	}
	if r.Thumbnail != nil {
		return r.Thumbnail.validate()
	}
	return nil
}

// Prepare checks the source against MEDIA_DIRS, MEDIA_HOSTS and MEDIA_MAX_BYTES, and keeps a
// file that came with the request (data, the shortcut's payload, or path) in the spool, out of
// the outbox row. It runs before the request is committed, so a refused file is never stored.
func (r *SendMedia) Prepare(env *actions.Env) *wire.Error {
	if env.Media == nil {
		return wire.Errorf(wire.CodeNotAllowed, "media is not set up in this bridge")
	}
	if r.Thumbnail != nil {
		if werr := r.Thumbnail.prepare(env); werr != nil {
			return werr
		}
	}
	data := r.raw
	switch {
	case r.Data != "":
		data = r.decoded
	case r.Path != "":
		var werr *wire.Error
		if data, werr = env.Media.ReadPath(r.Path); werr != nil {
			return werr
		}
	case r.URL != "":
		return env.Media.CheckURL(r.URL)
	case r.MXC != "":
		return nil
	}
	if werr := env.Media.CheckSize(int64(len(data))); werr != nil {
		return werr
	}
	name, err := env.Media.Spool(data)
	if err != nil {
		return wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	r.Spooled, r.Data, r.raw, r.decoded = name, "", nil, nil
	return nil
}

// Finished removes the spooled file once the request is answered and out of the outbox.
func (r *SendMedia) Finished(env *actions.Env) error {
	if r.Spooled == "" || env.Media == nil {
		return nil
	}
	return env.Media.RemoveSpool(r.Spooled)
}

// mediaProgress is what a send_media delivery keeps once its files are uploaded: the event,
// ready to send again with the same transaction ID.
type mediaProgress struct {
	Content *event.MessageEventContent `json:"content"`
	actions.OptionsProgress
}

// Deliver loads the file, describes it, uploads it (and its thumbnail) once, and sends the
// message; a retry after the upload sends the saved message without uploading again.
func (r *SendMedia) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	var saved mediaProgress
	ok, err := d.Progress.Load(&saved)
	if err != nil {
		return nil, err
	}
	if !ok || saved.Content == nil {
		data, err := r.Load(ctx, d)
		if err != nil {
			return nil, err
		}
		if saved.Content, err = r.Upload(ctx, d, roomID, data); err != nil {
			return nil, err
		}
		if err := d.Progress.Save(ctx, saved); err != nil {
			return nil, err
		}
	}
	if len(r.Options) == 0 {
		return r.Timing.SendMessage(ctx, d, saved.Content, r.ID)
	}
	save := func() error { return d.Progress.Save(ctx, saved) }
	return r.Choices.Send(ctx, d, r.Timing, roomID, saved.Content, r.ID, &saved.OptionsProgress, save)
}

// Upload describes and uploads the file (encrypted when roomID is), and returns the message
// that refers to it.
func (r *SendMedia) Upload(ctx context.Context, d *actions.Delivery, roomID id.RoomID, data []byte) (*event.MessageEventContent, error) {
	if werr := d.Media.CheckSize(int64(len(data))); werr != nil {
		return nil, werr
	}
	name := r.Filename
	if name == "" && r.Path != "" {
		name = filepath.Base(r.Path)
	}
	given := media.Given{Kind: r.Kind, Mimetype: r.Mimetype, Filename: name}
	if r.Thumbnail != nil {
		var err error
		if given.Thumbnail, err = r.Thumbnail.load(ctx, d.Media); err != nil {
			return nil, err
		}
	}
	file, werr := media.Describe(ctx, data, given, d.Media.ThumbnailPx())
	if werr != nil {
		return nil, werr
	}
	content := r.content(file)
	ref, err := r.reuse(ctx, d, roomID)
	if err != nil {
		return nil, err
	}
	if ref.URL == "" {
		if ref, err = d.Matrix.Upload(ctx, roomID, data, file.Mimetype, file.Filename); err != nil {
			return nil, err
		}
	}
	content.URL, content.File = ref.URL, ref.File
	if file.Thumbnail != nil {
		thumb, err := d.Matrix.Upload(ctx, roomID, file.Thumbnail, "image/jpeg", "thumbnail.jpg")
		if err != nil {
			return nil, err
		}
		content.Info.ThumbnailURL, content.Info.ThumbnailFile = thumb.URL, thumb.File
		content.Info.ThumbnailInfo = &event.FileInfo{MimeType: "image/jpeg", Size: len(file.Thumbnail),
			Width: file.ThumbnailWidth, Height: file.ThumbnailHeight}
	}
	return content, nil
}

// reuse refers to the `mxc` source as it is in an unencrypted room, where no new upload is
// needed; elsewhere (and for other sources) it returns no reference.
func (r *SendMedia) reuse(ctx context.Context, d *actions.Delivery, roomID id.RoomID) (mxmedia.Ref, error) {
	if r.MXC == "" {
		return mxmedia.Ref{}, nil
	}
	encrypted, err := d.Matrix.IsEncrypted(ctx, roomID)
	if err != nil || encrypted {
		return mxmedia.Ref{}, err
	}
	return mxmedia.Ref{URL: r.MXC}, nil
}

// Load reads the file from the spool, its URL or its mxc.
func (r *SendMedia) Load(ctx context.Context, d *actions.Delivery) ([]byte, error) {
	if d.Media == nil {
		return nil, wire.Errorf(wire.CodeNotAllowed, "media is not set up in this bridge")
	}
	switch {
	case r.Spooled != "":
		return d.Media.ReadSpool(r.Spooled)
	case r.URL != "":
		data, werr := d.Media.Fetch(ctx, r.URL)
		if werr != nil {
			return nil, werr
		}
		return data, nil
	}
	return d.Matrix.Download(ctx, r.MXC, nil, d.Media.MaxBytes())
}

// content builds the message without its file: the caption as its body with the filename
// beside it (MSC2530), or the filename as the body; integer info as Element X requires, the
// request's width, height and duration before those found in the file.
func (r *SendMedia) content(f media.File) *event.MessageEventContent {
	content := actions.RenderText(r.CaptionMarkdown, r.CaptionHTML, cmp.Or(r.Caption, f.Filename))
	if content.FormattedBody == "" {
		content.Format = ""
	}
	content.FileName = f.Filename
	content.MsgType = map[string]event.MessageType{"image": event.MsgImage, "video": event.MsgVideo,
		"audio": event.MsgAudio, "voice": event.MsgAudio, "file": event.MsgFile}[f.Kind]
	content.Info = &event.FileInfo{MimeType: f.Mimetype, Size: f.Size, Width: cmp.Or(r.Width, f.Width),
		Height: cmp.Or(r.Height, f.Height), Duration: cmp.Or(r.DurationMS, f.DurationMS), AnoaBlurhash: f.Blurhash}
	if f.Kind == "voice" {
		waveform := r.Waveform
		if waveform == nil {
			waveform = []int{}
		}
		content.MSC3245Voice = &event.MSC3245Voice{}
		content.MSC1767Audio = &event.MSC1767Audio{Duration: r.DurationMS, Waveform: waveform}
	}
	content.Mentions = actions.WithMentions(content.Mentions, r.Mentions)
	content.RelatesTo = actions.ReplyOrThread(r.ReplyTo, r.Thread)
	return &content
}

// MediaDownload downloads the file of an inbound media message and then publishes the message
// with its `media.path`, so that subscribers never see the message before its file.
type MediaDownload struct {
	// Topic is the message's room topic.
	Topic   string        `json:"topic"`
	Message *wire.Message `json:"message"`
	// File is the key and hash of an encrypted file.
	File *attachment.EncryptedFile `json:"file,omitempty"`
}

// RequestID is empty: nobody waits for the answer.
func (r *MediaDownload) RequestID() string { return "" }

// Validate accepts what the bridge built.
func (r *MediaDownload) Validate(actions.Targets) *wire.Error { return nil }

// Lane is the message's room: its messages are published in order, other rooms do not wait.
func (r *MediaDownload) Lane() string { return "media_download/" + r.Message.RoomID.String() }

// Deliver downloads, decrypts (checking the hash) and saves the file, then publishes the
// message and waits for the broker. A file that cannot be had for good (too large, gone, a bad
// hash) does not hold the message back: it is published without `path`. Failures that may pass
// are retried like any outbox entry.
func (r *MediaDownload) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	if d.Media == nil || d.Publisher == nil {
		return nil, wire.Errorf(wire.CodeNotAllowed, "media downloads are not set up in this bridge")
	}
	msg := r.Message
	if msg.Media != nil && msg.Media.Path == "" {
		data, err := d.Matrix.Download(ctx, msg.Media.MXC, r.File, d.Media.MaxBytes())
		if err == nil {
			msg.Media.Path, err = d.Media.Save(msg.EventID.String(), msg.Media.Filename, msg.Media.Mimetype, data, d.Now)
		}
		if err != nil {
			if ctx.Err() != nil || actions.Classify(err).Retry {
				return nil, err
			}
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("event_id", msg.EventID).Msg("Publishing a media message without its file")
		}
	}
	payload, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("failed to encode inbound message: %w", err)
	}
	return nil, d.Publisher.Publish(ctx, r.Topic, false, payload)
}
