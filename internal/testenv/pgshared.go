package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// sharedPostgres is the PostgreSQL server that PostgresDatabase starts once per test binary.
var sharedPostgres struct {
	once   sync.Once
	pg     *Postgres
	err    error
	dir    string
	nextDB atomic.Int64
}

// PostgresDatabase returns the URL of a fresh database on a PostgreSQL server started once for
// the test binary (stop it with StopSharedPostgres from TestMain). Without PostgreSQL the test
// fails (scripts/install-deps.sh installs it): it never skips.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	s := &sharedPostgres
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "matrix2mqtt-pg-")
		if s.err == nil {
			s.pg, s.err = StartPostgres(context.Background(), s.dir)
		}
	})
	if s.err != nil {
		t.Fatalf("failed to start PostgreSQL (scripts/install-deps.sh installs it): %v", s.err)
	}
	url, err := s.pg.CreateDatabase(context.Background(), fmt.Sprintf("test%d", s.nextDB.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// StopSharedPostgres stops the server PostgresDatabase started, if it did.
func StopSharedPostgres() {
	s := &sharedPostgres
	if s.pg != nil {
		s.pg.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
