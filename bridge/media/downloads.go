package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// tempPrefix starts the name of a download being written; pruning leaves it alone.
const tempPrefix = ".download-"

// abandonedAfter is how old an unfinished download is when pruning takes it for one a crash cut
// short, and removes it.
const abandonedAfter = time.Hour

// pruneEvery is how often the downloads are pruned besides after each download.
const pruneEvery = time.Hour

// unsafeName matches what may not appear in a downloaded file's name.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// Downloads reports whether inbound media are downloaded (MEDIA_DOWNLOAD_DIR is set).
func (m *Media) Downloads() bool { return m.cfg.DownloadDir != "" }

// Save writes a downloaded file (0600) to MEDIA_DOWNLOAD_DIR under a name made of the event ID
// and the extension of its filename or mimetype, whole or not at all, and then prunes the
// directory. It returns the file's path.
func (m *Media) Save(eventID, filename, mimetype string, data []byte, now time.Time) (string, error) {
	if !m.Downloads() {
		return "", errors.New("failed to save a download: MEDIA_DOWNLOAD_DIR is not set")
	}
	ext := strings.ToLower(filepath.Ext(filename))
	if ext == "" || unsafeName.MatchString(ext[1:]) {
		ext = extension(mimetype)
	}
	name := unsafeName.ReplaceAllString(strings.TrimPrefix(eventID, "$"), "_") + ext
	path := filepath.Join(m.cfg.DownloadDir, name)
	tmp, err := os.CreateTemp(m.cfg.DownloadDir, tempPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("failed to save a download: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("failed to save a download: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("failed to save a download: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("failed to save a download: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("failed to save a download: %w", err)
	}
	if err := m.prune(now, path); err != nil {
		return path, err
	}
	return path, nil
}

// RunPruning prunes MEDIA_DOWNLOAD_DIR at once and then every hour until ctx ends, so that files
// past MEDIA_RETENTION go even while nothing new is downloaded.
func (m *Media) RunPruning(ctx context.Context, clk clock.Clock) {
	if !m.Downloads() {
		return
	}
	for {
		if err := m.prune(clk.Now(), ""); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune downloads")
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(pruneEvery):
		}
	}
}

// prune removes downloaded files older than MEDIA_RETENTION, then the oldest ones until the
// rest fit in MEDIA_MAX_TOTAL_BYTES; keep (the file just written) stays.
func (m *Media) prune(now time.Time, keep string) error {
	m.pruning.Lock()
	defer m.pruning.Unlock()
	entries, err := os.ReadDir(m.cfg.DownloadDir)
	if err != nil {
		return fmt.Errorf("failed to prune downloads: %w", err)
	}
	type file struct {
		path string
		mod  time.Time
		size int64
	}
	var files []file
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(e.Name(), tempPrefix) { // a download being written, or one a crash cut short
			if now.Sub(info.ModTime()) > abandonedAfter {
				_ = os.Remove(filepath.Join(m.cfg.DownloadDir, e.Name()))
			}
			continue
		}
		f := file{filepath.Join(m.cfg.DownloadDir, e.Name()), info.ModTime(), info.Size()}
		if f.path != keep && m.cfg.Retention > 0 && now.Sub(f.mod) > m.cfg.Retention {
			_ = os.Remove(f.path)
			continue
		}
		files = append(files, f)
		total += f.size
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range files {
		if m.cfg.MaxTotalBytes == 0 || total <= m.cfg.MaxTotalBytes {
			break
		}
		if f.path == keep {
			continue
		}
		if err := os.Remove(f.path); err == nil {
			total -= f.size
		}
	}
	return nil
}
