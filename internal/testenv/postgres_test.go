package testenv

import (
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPostgres(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	pg, err := StartPostgres(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("postgres started in %s at %s", time.Since(start).Round(time.Millisecond), pg.URL)
	t.Cleanup(func() {
		if err := pg.Close(); err != nil {
			t.Error(err)
		}
	})
	if want := "postgres://postgres@" + pg.Addr + "/postgres?sslmode=disable"; pg.URL != want {
		t.Errorf("URL = %q, want %q", pg.URL, want)
	}

	first, err := pg.CreateDatabase(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	second, err := pg.CreateDatabase(ctx, "Second DB")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.CreateDatabase(ctx, "first"); err == nil {
		t.Error("creating database first twice succeeded")
	}
	if _, err := pg.CreateDatabase(ctx, strings.Repeat("x", 64)); err == nil {
		t.Error("creating a database with a 64-byte name succeeded")
	}

	// psql takes the URLs as they are.
	psql := func(dbURL, sql string) (string, error) {
		out, err := exec.CommandContext(ctx, filepath.Join(pg.binDir, "psql"), "-X", "-q", "-A", "-t",
			"-v", "ON_ERROR_STOP=1", "-d", dbURL, "-c", sql).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := psql(first, "CREATE TABLE t (v text); INSERT INTO t VALUES ('hello'); "+
		"SELECT current_database() || ' ' || v FROM t")
	if err != nil {
		t.Fatalf("psql: %v: %s", err, out)
	}
	if out != "first hello" {
		t.Errorf("query on first = %q, want %q", out, "first hello")
	}
	out, err = psql(second, "SELECT current_database(), to_regclass('t') IS NULL")
	if err != nil {
		t.Fatalf("psql: %v: %s", err, out)
	}
	if out != "Second DB|t" {
		t.Errorf("query on second = %q, want %q (its own, empty database)", out, "Second DB|t")
	}
	if u, err := url.Parse(second); err != nil || u.Path != "/Second DB" {
		t.Errorf("URL of the second database = %q (%v)", second, err)
	}

	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if out, err := psql(first, "SELECT 1"); err == nil {
		t.Errorf("psql still connects after Close: %s", out)
	}
}
