package bridge

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

var (
	pgOnce   sync.Once
	pg       *testenv.Postgres
	pgErr    error
	pgDir    string
	pgNextDB atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pg != nil {
		pg.Close()
	}
	if pgDir != "" {
		os.RemoveAll(pgDir)
	}
	os.Exit(code)
}

// postgresDatabase returns the URL of a fresh database on a PostgreSQL server started once for
// the package. Without PostgreSQL installed the test is skipped, unless
// MATRIX2MQTT_REQUIRE_POSTGRES is set (scripts/test.sh sets it), where it fails.
func postgresDatabase(t *testing.T) string {
	t.Helper()
	pgOnce.Do(func() {
		pgDir, pgErr = os.MkdirTemp("", "matrix2mqtt-pg-")
		if pgErr == nil {
			pg, pgErr = testenv.StartPostgres(context.Background(), pgDir)
		}
	})
	if pgErr != nil {
		if os.Getenv("MATRIX2MQTT_REQUIRE_POSTGRES") == "" {
			t.Skipf("PostgreSQL not available (scripts/install-deps.sh installs it): %v", pgErr)
		}
		t.Fatalf("failed to start PostgreSQL: %v", pgErr)
	}
	url, err := pg.CreateDatabase(context.Background(), fmt.Sprintf("bridge%d", pgNextDB.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return url
}
