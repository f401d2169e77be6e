package matrix

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/echoes"
)

// TestEchoesSurviveRestart checks that an echo saved with the sync token is found by a new
// process, and that one whose sync token was not saved is not.
func TestEchoesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "echo.db")
	open := func() *echoes.Echoes { return echoes.New(openOwnDB(t, path)) }
	first := open()
	first.Add("m2m1", "$one")
	saved := 0
	if err := first.SaveWithToken(ctx, func(context.Context) error { saved++; return nil }); err != nil {
		t.Fatal(err)
	}
	first.Add("m2m4", "$four")
	if err := first.SaveWithToken(ctx, func(context.Context) error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed token save was not reported")
	}
	first.Add("m2m5", "$five")
	if err := first.SaveWithToken(ctx, func(context.Context) error { saved++; return nil }); err != nil {
		t.Fatal(err)
	}
	first.Add("m2m2", "$two") // seen, but its sync token was never saved
	if saved != 2 {
		t.Fatalf("token saved %d times", saved)
	}

	second := open()
	tests := []struct {
		txnID string
		want  id.EventID
		found bool
	}{
		{"m2m1", "$one", true},
		{"m2m2", "", false},
		{"m2m3", "", false},
		{"m2m4", "$four", true}, // kept for the next save after a failed one
		{"m2m5", "$five", true},
	}
	for _, tt := range tests {
		got, found := second.Get(ctx, tt.txnID)
		if got != tt.want || found != tt.found {
			t.Errorf("get(%s) = %s, %v; want %s, %v", tt.txnID, got, found, tt.want, tt.found)
		}
	}
}

// openOwnDB opens (and upgrades) this package's tables in the SQLite file at path.
func openOwnDB(t *testing.T, path string) *dbutil.Database {
	t.Helper()
	raw, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	db := raw.Child("matrix2mqtt_matrix_version", upgradeTable, dbutil.NoopLogger)
	if err := db.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}
