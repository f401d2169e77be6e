package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// TestOpenDataDirWarnings: an existing DATA_DIR that others can read or enter is warned about;
// one the bridge creates (0700) or an existing private one is not.
func TestOpenDataDirWarnings(t *testing.T) {
	tests := []struct {
		name     string
		existing os.FileMode // 0: the bridge creates it
		warn     bool
	}{
		{"created by the bridge", 0, false},
		{"existing private", 0o700, false},
		{"existing readable by all", 0o755, true},
		{"existing group readable", 0o750, true},
		{"existing enterable by others", 0o701, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tc.existing != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			ctx := zerolog.New(&logs).WithContext(context.Background())
			s, err := Open(ctx, dir, "", clock.NewFake())
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if got := strings.Contains(logs.String(), "DATA_DIR can be read by other users"); got != tc.warn {
				t.Fatalf("warned = %v, want %v; log: %s", got, tc.warn, logs.String())
			}
		})
	}
}
