// Package media moves files between the bridge and the homeserver's content repository:
// uploads (encrypted for encrypted rooms) within the homeserver's upload limit, and
// authenticated downloads, decrypted and checked against their hash.
package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// configTTL is how long the homeserver's media config is trusted before it is asked again.
const configTTL = time.Hour

// ErrTooLarge means a file is over the homeserver's upload limit or the caller's cap.
var ErrTooLarge = errors.New("file too large")

// ErrBadFile means a downloaded file does not decrypt or match its hash.
var ErrBadFile = errors.New("bad encrypted file")

// Ref is how a message refers to an uploaded file: URL in unencrypted rooms, File (with its
// key) in encrypted ones.
type Ref struct {
	URL  id.ContentURIString      `json:"url,omitempty"`
	File *event.EncryptedFileInfo `json:"file,omitempty"`
}

// Transfer uploads and downloads through one Matrix client.
type Transfer struct {
	cli *mautrix.Client

	mu         sync.Mutex
	uploadSize int64 // m.upload.size; 0 when the homeserver sets none
	fetched    time.Time
}

// New returns a Transfer that uses cli.
func New(cli *mautrix.Client) *Transfer { return &Transfer{cli: cli} }

// UploadLimit returns the homeserver's m.upload.size (0: none), asked at most once an hour.
func (t *Transfer) UploadLimit(ctx context.Context) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.fetched.IsZero() && time.Since(t.fetched) < configTTL {
		return t.uploadSize, nil
	}
	cfg, err := t.cli.GetMediaConfig(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to get the media config: %w", err)
	}
	t.uploadSize, t.fetched = cfg.UploadSize, time.Now()
	return t.uploadSize, nil
}

// Upload uploads data, encrypted with a new key when encrypt is set, after checking the
// homeserver's upload limit.
func (t *Transfer) Upload(ctx context.Context, data []byte, mimetype, filename string, encrypt bool) (Ref, error) {
	limit, err := t.UploadLimit(ctx)
	if err != nil {
		return Ref{}, err
	}
	if limit > 0 && int64(len(data)) > limit {
		return Ref{}, fmt.Errorf("%w: %d bytes, the homeserver takes at most %d (m.upload.size)", ErrTooLarge, len(data), limit)
	}
	body, contentType, name := data, mimetype, filename
	var file *attachment.EncryptedFile
	if encrypt {
		file = attachment.NewEncryptedFile()
		body = file.Encrypt(data)
		// The homeserver sees neither the type nor the name of an encrypted file.
		contentType, name = "application/octet-stream", ""
	}
	resp, err := t.cli.UploadMedia(ctx, mautrix.ReqUploadMedia{
		ContentBytes: body, ContentType: contentType, FileName: name,
	})
	if err != nil {
		return Ref{}, fmt.Errorf("failed to upload %d bytes: %w", len(body), err)
	}
	uri := resp.ContentURI.CUString()
	if file == nil {
		return Ref{URL: uri}, nil
	}
	return Ref{File: &event.EncryptedFileInfo{EncryptedFile: *file, URL: uri}}, nil
}

// Download fetches a file through the authenticated media API, at most maxBytes of it, and
// decrypts it when file (its key and hash) is given.
func (t *Transfer) Download(ctx context.Context, uri id.ContentURIString, file *attachment.EncryptedFile, maxBytes int64) ([]byte, error) {
	parsed, err := uri.Parse()
	if err != nil {
		return nil, fmt.Errorf("failed to parse %q: %w", uri, err)
	}
	resp, err := t.cli.Download(ctx, parsed)
	if err != nil {
		return nil, fmt.Errorf("failed to download %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > maxBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, at most %d are taken", ErrTooLarge, uri, resp.ContentLength, maxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("failed to download %s: %w", uri, err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, uri, maxBytes)
	}
	if file == nil {
		return data, nil
	}
	if err := file.DecryptInPlace(data); err != nil {
		return nil, fmt.Errorf("failed to decrypt %s: %w: %w", uri, ErrBadFile, err)
	}
	return data, nil
}
