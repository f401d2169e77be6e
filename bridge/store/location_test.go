package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// TestOpenHidesDatabaseURL: a PostgreSQL DATABASE_URL that is malformed, or names a server that
// cannot be reached, is not repeated with its credentials in Location's or Open's error.
func TestOpenHidesDatabaseURL(t *testing.T) {
	tests := []struct{ name, url string }{
		{"bad escape in the password", "postgres://admin:hunter2%zz@db/m2m"},
		{"bad port", "postgres://admin:hunter2@db:port/m2m"},
		{"bad host", "postgresql://admin:hunter2@[db/m2m"},
		{"control character", "postgres://admin:hunter2@db/m2m\x7f"},
		{"password in the query", "postgres://db/m2m?password=hunter2&sslmode=%zz"},
		{"unreachable server", "postgres://admin:hunter2@127.0.0.1:1/m2m?sslmode=disable&connect_timeout=2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(zerolog.Nop().WithContext(context.Background()), 10*time.Second)
			defer cancel()
			_, _, locErr := Location(t.TempDir(), tc.url)
			s, err := Open(ctx, t.TempDir(), tc.url, clock.NewFake())
			if err == nil {
				s.Close()
				t.Fatal("Open() succeeded")
			}
			for _, e := range []error{locErr, err} {
				if e != nil && (strings.Contains(e.Error(), "hunter2") || strings.Contains(e.Error(), "admin")) {
					t.Fatalf("the error repeats the credentials: %v", e)
				}
			}
			if !strings.Contains(err.Error(), "DATABASE_URL") && !strings.Contains(err.Error(), "database") {
				t.Fatalf("the error does not say what failed: %v", err)
			}
		})
	}
}
