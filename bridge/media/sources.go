package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// maxRedirects bounds the redirects of one fetch.
const maxRedirects = 5

// Media gives the files of outbound media.
type Media struct {
	cfg      Config
	dirs     []string // Dirs with symlinks resolved
	headers  map[string]http.Header
	spoolDir string
	client   *http.Client
	// pruning makes the prunes of the downloads (after each Save, and RunPruning's) one at a
	// time, so that each counts the files it sees.
	pruning sync.Mutex
}

// New prepares the sources; files waiting in the outbox are kept in dataDir/spool.
func New(cfg Config, dataDir string) (*Media, error) {
	headers, err := parseHeaders(cfg.Headers)
	if err != nil {
		return nil, err
	}
	m := &Media{cfg: cfg, headers: headers, spoolDir: filepath.Join(dataDir, "spool")}
	for _, d := range cfg.Dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("MEDIA_DIRS: %w", err)
		}
		if resolved, err := filepath.EvalSymlinks(abs); err == nil {
			abs = resolved
		}
		m.dirs = append(m.dirs, abs)
	}
	for _, d := range []string{m.spoolDir, cfg.DownloadDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("failed to create the media directory %s: %w", d, err)
		}
	}
	m.client = &http.Client{Timeout: cfg.FetchTimeout, CheckRedirect: m.checkRedirect}
	return m, nil
}

// MaxBytes is MEDIA_MAX_BYTES.
func (m *Media) MaxBytes() int64 { return m.cfg.MaxBytes }

// ThumbnailPx is MEDIA_THUMBNAIL_PX.
func (m *Media) ThumbnailPx() int { return m.cfg.ThumbnailPx }

// CheckSize refuses an empty file or one over MEDIA_MAX_BYTES.
func (m *Media) CheckSize(n int64) *wire.Error {
	if n == 0 {
		return wire.Errorf(wire.CodeInvalidRequest, "the file is empty")
	}
	if n > m.cfg.MaxBytes {
		return wire.Errorf(wire.CodeTooLarge, "the file is %d bytes; MEDIA_MAX_BYTES is %d", n, m.cfg.MaxBytes)
	}
	return nil
}

// ReadPath reads a file that must lie, after symlinks and `..` are resolved, under one of
// MEDIA_DIRS.
func (m *Media) ReadPath(path string) ([]byte, *wire.Error) {
	if len(m.dirs) == 0 {
		return nil, wire.Errorf(wire.CodeNotAllowed, "field 'path' needs MEDIA_DIRS: no directory is allowed")
	}
	if !filepath.IsAbs(path) {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'path' must be absolute, not %q", path)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'path': %q cannot be read", path)
	}
	if !slices.ContainsFunc(m.dirs, func(d string) bool { return within(d, resolved) }) {
		return nil, wire.Errorf(wire.CodeNotAllowed, "field 'path': %q is not under MEDIA_DIRS", path)
	}
	f, err := os.Open(resolved)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'path': %q cannot be read", path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'path': %q is not a regular file", path)
	}
	if werr := m.CheckSize(st.Size()); werr != nil {
		return nil, werr
	}
	data, err := io.ReadAll(io.LimitReader(f, m.cfg.MaxBytes+1))
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'path': %q cannot be read", path)
	}
	if werr := m.CheckSize(int64(len(data))); werr != nil {
		return nil, werr
	}
	return data, nil
}

// within reports whether path is dir or lies beneath it.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// CheckURL refuses a URL that is not HTTP(S) to a host in MEDIA_HOSTS.
func (m *Media) CheckURL(raw string) *wire.Error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'url' must be an http or https URL")
	}
	if !m.hostAllowed(u) {
		return wire.Errorf(wire.CodeNotAllowed, "field 'url': host %q is not in MEDIA_HOSTS", u.Host)
	}
	return nil
}

func (m *Media) hostAllowed(u *url.URL) bool {
	host, name := strings.ToLower(u.Host), strings.ToLower(u.Hostname())
	return slices.ContainsFunc(m.cfg.Hosts, func(h string) bool {
		h = strings.ToLower(h)
		return h == host || h == name
	})
}

// setHeaders puts the configured headers of u's host on req, and only those.
func (m *Media) setHeaders(req *http.Request, u *url.URL) {
	for _, h := range m.headers {
		for name := range h {
			req.Header.Del(name)
		}
	}
	h := m.headers[strings.ToLower(u.Host)]
	if h == nil {
		h = m.headers[strings.ToLower(u.Hostname())]
	}
	for name, values := range h {
		req.Header[name] = values
	}
}

// errRedirect marks a redirect to a host that is not allowed.
var errRedirect = errors.New("redirect not allowed")

func (m *Media) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", errRedirect, maxRedirects)
	}
	if (req.URL.Scheme != "http" && req.URL.Scheme != "https") || !m.hostAllowed(req.URL) {
		return fmt.Errorf("%w: to host %q, which is not in MEDIA_HOSTS", errRedirect, req.URL.Host)
	}
	m.setHeaders(req, req.URL)
	return nil
}

// Fetch GETs a URL within MEDIA_FETCH_TIMEOUT and MEDIA_MAX_BYTES, with the host's headers;
// every redirect must stay within MEDIA_HOSTS. Its errors are the request's answer.
func (m *Media) Fetch(ctx context.Context, raw string) ([]byte, *wire.Error) {
	if werr := m.CheckURL(raw); werr != nil {
		return nil, werr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'url' cannot be fetched: %v", err)
	}
	m.setHeaders(req, req.URL)
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fetchError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'url': the server answered %s", resp.Status)
	}
	if resp.ContentLength > m.cfg.MaxBytes {
		return nil, m.CheckSize(resp.ContentLength)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, m.cfg.MaxBytes+1))
	if err != nil {
		return nil, fetchError(err)
	}
	if werr := m.CheckSize(int64(len(data))); werr != nil {
		return nil, werr
	}
	return data, nil
}

// fetchError answers a failed fetch; it names no URL (a query may hold a token).
func fetchError(err error) *wire.Error {
	var uerr *url.Error
	switch {
	case errors.Is(err, errRedirect):
		var msg string
		if errors.As(err, &uerr) {
			msg = uerr.Err.Error()
		}
		return wire.Errorf(wire.CodeNotAllowed, "field 'url': %s", msg)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &uerr) && uerr.Timeout():
		return wire.Errorf(wire.CodeTimeout, "field 'url': no answer within MEDIA_FETCH_TIMEOUT")
	}
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return wire.Errorf(wire.CodeInvalidRequest, "field 'url' cannot be fetched: %v", err)
}

// Spool keeps a file for the outbox (0600) and returns its name.
func (m *Media) Spool(data []byte) (string, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	name := hex.EncodeToString(b[:])
	if err := os.WriteFile(filepath.Join(m.spoolDir, name), data, 0o600); err != nil {
		return "", fmt.Errorf("failed to keep the file for the outbox: %w", err)
	}
	return name, nil
}

// spoolPath refuses names that Spool did not make.
func (m *Media) spoolPath(name string) (string, error) {
	if _, err := hex.DecodeString(name); err != nil || len(name) != 24 {
		return "", fmt.Errorf("failed to find a spooled file: bad name %q", name)
	}
	return filepath.Join(m.spoolDir, name), nil
}

// ReadSpool reads a spooled file.
func (m *Media) ReadSpool(name string) ([]byte, error) {
	p, err := m.spoolPath(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("failed to read a spooled file: %w", err)
	}
	return data, nil
}

// RemoveSpool removes a spooled file once its entry is finished.
func (m *Media) RemoveSpool(name string) error {
	p, err := m.spoolPath(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove a spooled file: %w", err)
	}
	return nil
}

// PruneSpool removes spooled files that no outbox request names (left by a crash between
// spooling and committing). eachRequest hands every stored request of the outbox to fn, one at
// a time; a request's `spooled` field names its file.
func (m *Media) PruneSpool(eachRequest func(fn func(request json.RawMessage)) error) error {
	inUse := map[string]bool{}
	err := eachRequest(func(raw json.RawMessage) {
		var probe struct {
			Spooled string `json:"spooled"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.Spooled != "" {
			inUse[probe.Spooled] = true
		}
	})
	if err != nil {
		return fmt.Errorf("failed to prune the media spool: %w", err)
	}
	entries, err := os.ReadDir(m.spoolDir)
	if err != nil {
		return fmt.Errorf("failed to prune the media spool: %w", err)
	}
	for _, e := range entries {
		if !inUse[e.Name()] {
			if err := os.Remove(filepath.Join(m.spoolDir, e.Name())); err != nil {
				return fmt.Errorf("failed to prune the media spool: %w", err)
			}
		}
	}
	return nil
}
