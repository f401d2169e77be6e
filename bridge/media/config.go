// Package media is where the files of outbound media come from and what they are: the
// allowlisted directories and hosts, the HTTP fetcher, the spool of files waiting in the outbox,
// and the description of a file (kind, mimetype, dimensions, thumbnail, blurhash).
package media

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Config is the media section of the configuration.
type Config struct {
	// Dirs are the directories whose files `path` may name.
	Dirs []string `env:"MEDIA_DIRS"`
	// Hosts are the hosts (host or host:port) that `url` may fetch from, redirects included.
	Hosts []string `env:"MEDIA_HOSTS"`
	// Headers are sent with fetches from one host: `host=Name: value`, comma-separated.
	Headers []string `env:"MEDIA_HEADERS"`
	// MaxBytes caps a file, in and out.
	MaxBytes int64 `env:"MEDIA_MAX_BYTES" envDefault:"20971520"`
	// FetchTimeout bounds one `url` fetch.
	FetchTimeout time.Duration `env:"MEDIA_FETCH_TIMEOUT" envDefault:"30s"`
	// ThumbnailPx: images wider or higher than this get a thumbnail that fits in it.
	ThumbnailPx int `env:"MEDIA_THUMBNAIL_PX" envDefault:"800"`
	// DownloadDir, when set, receives the files of inbound media messages.
	DownloadDir string `env:"MEDIA_DOWNLOAD_DIR"`
	// Retention is how long downloaded files are kept; 0 keeps them.
	Retention time.Duration `env:"MEDIA_RETENTION" envDefault:"720h"`
	// MaxTotalBytes bounds the downloaded files together (oldest go first); 0 means no bound.
	MaxTotalBytes int64 `env:"MEDIA_MAX_TOTAL_BYTES" envDefault:"1073741824"`
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if c.MaxBytes < 1024 {
		return errors.New("MEDIA_MAX_BYTES: must be at least 1024")
	}
	if c.FetchTimeout < time.Second {
		return errors.New("MEDIA_FETCH_TIMEOUT: must be at least 1s")
	}
	if c.ThumbnailPx < 32 {
		return errors.New("MEDIA_THUMBNAIL_PX: must be at least 32")
	}
	if c.Retention < 0 || c.MaxTotalBytes < 0 {
		return errors.New("MEDIA_RETENTION and MEDIA_MAX_TOTAL_BYTES: must not be negative")
	}
	if _, err := parseHeaders(c.Headers); err != nil {
		return err
	}
	for _, h := range c.Hosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			return fmt.Errorf("MEDIA_HOSTS: %q is not a host or host:port", h)
		}
	}
	return nil
}

// parseHeaders reads MEDIA_HEADERS into headers per host. Errors never quote a value: they
// are usually tokens.
func parseHeaders(list []string) (map[string]http.Header, error) {
	out := map[string]http.Header{}
	for i, entry := range list {
		host, header, ok := strings.Cut(entry, "=")
		name, value, ok2 := strings.Cut(header, ":")
		name = strings.TrimSpace(name)
		if !ok || !ok2 || host == "" || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("MEDIA_HEADERS: entry %d is not host=Name: value", i+1)
		}
		host = strings.ToLower(strings.TrimSpace(host))
		if out[host] == nil {
			out[host] = http.Header{}
		}
		out[host].Add(name, strings.TrimSpace(value))
	}
	return out, nil
}
