package rooms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Avatar is the `avatar` of create_room and set_room: an mxc:// URI (empty removes the avatar),
// or an object with exactly one of the send_media sources `data` (base64), `path` (under
// MEDIA_DIRS) or `url` (a host of MEDIA_HOSTS), which is uploaded unencrypted (a room avatar
// is public state) before the state event is set.
type Avatar struct {
	// MXC is set when the avatar was given as a string.
	MXC  id.ContentURIString `json:"-"`
	Data string              `json:"data,omitempty"`
	Path string              `json:"path,omitempty"`
	URL  string              `json:"url,omitempty"`

	decoded []byte
	// object is set when the avatar was given as an object of sources.
	object bool
	// bad is set when the value was neither a string nor an object of sources: Check reports it.
	bad bool
}

// UnmarshalJSON takes a string (an mxc:// URI) or an object of sources; anything else (other
// fields, other types) is kept as bad for Check to refuse with a clear message.
func (a *Avatar) UnmarshalJSON(data []byte) error {
	var uri string
	if err := json.Unmarshal(data, &uri); err == nil {
		*a = Avatar{MXC: id.ContentURIString(uri)}
		return nil
	}
	type sources struct {
		Data string `json:"data,omitempty"`
		Path string `json:"path,omitempty"`
		URL  string `json:"url,omitempty"`
	}
	var s sources
	if err := wire.Decode(data, &s); err != nil { // strict: no other fields, letter case or repeats
		*a = Avatar{bad: true}
		return nil
	}
	*a = Avatar{Data: s.Data, Path: s.Path, URL: s.URL, object: true}
	return nil
}

func (a *Avatar) isSource() bool { return a.object }

// Check checks the shape: a valid mxc:// URI, or exactly one source with `data` in base64.
// The allowlists are checked by Upload, before anything is fetched or uploaded.
func (a *Avatar) Check() *wire.Error {
	if a.bad {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'avatar' must be an mxc:// URI or an object with exactly one of 'data', 'path' or 'url' (strings)")
	}
	if !a.isSource() {
		return checkMXC("avatar", string(a.MXC))
	}
	if actions.CountGiven(a.Data, a.Path, a.URL) != 1 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'avatar' takes exactly one of 'data', 'path' or 'url'")
	}
	if a.Data != "" {
		var err error
		if a.decoded, err = base64.StdEncoding.DecodeString(a.Data); err != nil {
			if a.decoded, err = base64.RawStdEncoding.DecodeString(a.Data); err != nil {
				return wire.Errorf(wire.CodeInvalidRequest, "field 'avatar.data' is not base64")
			}
		}
	}
	return nil
}

// Upload returns the avatar's mxc:// URI: the one given, or that of the source, loaded within
// MEDIA_DIRS, MEDIA_HOSTS and MEDIA_MAX_BYTES, checked to be an image, and uploaded unencrypted.
func (a *Avatar) Upload(ctx context.Context, env *actions.Env) (id.ContentURIString, error) {
	if !a.isSource() {
		return a.MXC, nil
	}
	if env.Media == nil {
		return "", wire.Errorf(wire.CodeNotAllowed, "media is not set up in this bridge")
	}
	data := a.decoded
	var werr *wire.Error
	switch {
	case a.Path != "":
		data, werr = env.Media.ReadPath(a.Path)
	case a.URL != "":
		data, werr = env.Media.Fetch(ctx, a.URL)
	default:
		werr = env.Media.CheckSize(int64(len(data)))
	}
	if werr != nil {
		return "", wire.Within("avatar", werr)
	}
	mimetype, _, _ := strings.Cut(http.DetectContentType(data), ";")
	if !strings.HasPrefix(mimetype, "image/") {
		return "", wire.Errorf(wire.CodeInvalidRequest, "field 'avatar' must be an image, not %s", mimetype)
	}
	// No room: an upload for no room is never encrypted.
	ref, err := env.Matrix.Upload(ctx, "", data, mimetype, "avatar"+extension(mimetype))
	if err != nil {
		return "", err
	}
	return ref.URL, nil
}

// extension is the usual file extension of an image mimetype.
func extension(mimetype string) string {
	_, sub, _ := strings.Cut(mimetype, "/")
	switch sub {
	case "jpeg":
		return ".jpg"
	case "x-icon", "vnd.microsoft.icon":
		return ".ico"
	}
	return "." + sub
}
