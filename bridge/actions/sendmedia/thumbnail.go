package sendmedia

import (
	"context"
	"encoding/base64"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// maxThumbnailBytes bounds a given thumbnail: one from `data` or `path` travels inside the
// outbox row.
const maxThumbnailBytes = 2 << 20

// Thumbnail is the `thumbnail` field: a picture shown for the file instead of one the bridge
// makes from it (a camera's snapshot for its clip, or a video's when ffmpeg is not at hand),
// from exactly one of `data` (base64), `path` (under MEDIA_DIRS) or `url` (to MEDIA_HOSTS).
type Thumbnail struct {
	Data string `json:"data,omitempty"`
	Path string `json:"path,omitempty"`
	URL  string `json:"url,omitempty"`

	decoded []byte // Data, decoded
}

// validate checks the shape, and a picture given as data by its header.
func (t *Thumbnail) validate() *wire.Error {
	if actions.CountGiven(t.Data, t.Path, t.URL) != 1 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'thumbnail' takes exactly one of 'data', 'path' or 'url'")
	}
	if t.Data == "" {
		return nil
	}
	var err error
	if t.decoded, err = base64.StdEncoding.DecodeString(t.Data); err != nil {
		if t.decoded, err = base64.RawStdEncoding.DecodeString(t.Data); err != nil {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'thumbnail.data' is not base64")
		}
	}
	return checkThumbnail(t.decoded)
}

// prepare checks the source against MEDIA_DIRS and MEDIA_HOSTS before the request is stored,
// and reads a `path` at once into `data`, as the file itself is.
func (t *Thumbnail) prepare(env *actions.Env) *wire.Error {
	switch {
	case t.Path != "":
		data, werr := env.Media.ReadPath(t.Path)
		if werr != nil {
			return wire.Within("thumbnail", werr)
		}
		if werr := checkThumbnail(data); werr != nil {
			return werr
		}
		t.Data, t.Path, t.decoded = base64.StdEncoding.EncodeToString(data), "", data
	case t.URL != "":
		if werr := env.Media.CheckURL(t.URL); werr != nil {
			return wire.Within("thumbnail", werr)
		}
	}
	return nil
}

// load returns the picture, fetching a `url` source.
func (t *Thumbnail) load(ctx context.Context, m *media.Media) ([]byte, error) {
	if t.URL == "" {
		if t.decoded == nil {
			if err := t.validate(); err != nil {
				return nil, err
			}
		}
		return t.decoded, nil
	}
	data, werr := m.Fetch(ctx, t.URL)
	if werr != nil {
		return nil, wire.Within("thumbnail", werr)
	}
	if werr := checkThumbnail(data); werr != nil {
		return nil, werr
	}
	return data, nil
}

// checkThumbnail refuses an empty or oversized picture, or one Describe cannot take.
func checkThumbnail(data []byte) *wire.Error {
	if len(data) == 0 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'thumbnail': the picture is empty")
	}
	if len(data) > maxThumbnailBytes {
		return wire.Errorf(wire.CodeTooLarge, "field 'thumbnail': the picture is %d bytes; at most %d are taken", len(data), maxThumbnailBytes)
	}
	return media.CheckThumbnail(data)
}
