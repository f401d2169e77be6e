package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Video makes a w×h MP4 test clip of secs seconds with ffmpeg (scripts/install-deps.sh installs
// it), in dir.
func Video(dir string, w, h, secs int) ([]byte, error) {
	out := filepath.Join(dir, "clip.mp4")
	cmd := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
		fmt.Sprintf("testsrc=duration=%d:size=%dx%d:rate=10", secs, w, h), "-pix_fmt", "yuv420p", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("failed to make a test video with ffmpeg (scripts/install-deps.sh installs it): %w: %s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("failed to read the test video: %w", err)
	}
	return data, nil
}
