// Package store owns the bridge's tables (the outbox, the keys of done MQTT messages, the ids
// of accepted requests, the published inbound events) and their schema, and prunes what is
// only kept for a while.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq" // registers the postgres driver
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the sqlite3-fk-wal driver

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// Retention of what is kept only to recognise repeats.
const (
	// DoneRetention is how long the keys of done MQTT messages are remembered.
	DoneRetention = 24 * time.Hour
	// InboundRetention is how long published inbound event IDs are remembered.
	InboundRetention = 24 * time.Hour
	// pruneEvery is how often the pruning timer runs.
	pruneEvery = time.Hour
)

// sqlChunk is how many rows one statement reads or writes at most.
const sqlChunk = 200

// Store is the bridge's database: Root is shared with the Matrix client (its own tables and the
// crypto store); the bridge's tables are reached through Store's methods.
type Store struct {
	Root  *dbutil.Database
	db    *dbutil.Database
	clock clock.Clock
	// writes serialises write transactions on SQLite (nil on PostgreSQL). There a transaction
	// that finds the database locked sleeps in SQLite's busy handler (1 ms, 2 ms, 5 ms…) instead
	// of starting when the lock is free; writers wait on this mutex instead, which hands over
	// at once.
	writes *sync.Mutex
	// finishing holds the entries waiting in Finish for the next group commit (SQLite).
	finishMu  sync.Mutex
	finishing []*finishing
	// reads lets ReadUpTo skip its query when there is nothing new to read.
	reads *readCache
}

// Location returns the database driver and where the database is: a PostgreSQL URL, or the
// path of the SQLite file (DATA_DIR/matrix2mqtt.db unless databaseURL names another).
func Location(dataDir, databaseURL string) (driver, location string, err error) {
	switch {
	case databaseURL == "":
		return "sqlite3-fk-wal", filepath.Join(dataDir, "matrix2mqtt.db"), nil
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		// Parsed here, since lib/pq's parse error quotes the whole URL, password included.
		if _, err := url.Parse(databaseURL); err != nil {
			return "", "", errors.New("DATABASE_URL: not a valid URL (the value is not shown: it may hold a password; " +
				"percent-encode reserved characters in the user name and password)")
		}
		return "postgres", databaseURL, nil
	case strings.HasPrefix(databaseURL, "sqlite:"), strings.HasPrefix(databaseURL, "file:"):
		return "sqlite3-fk-wal", strings.TrimPrefix(strings.TrimPrefix(databaseURL, "sqlite:"), "file:"), nil
	}
	return "", "", errors.New("DATABASE_URL: must be postgres://…, postgresql://… or sqlite:PATH (the value is not shown: it may hold a password)")
}

// Open opens (creating DATA_DIR and the SQLite file 0600 where needed) and upgrades the
// database.
func Open(ctx context.Context, dataDir, databaseURL string, clk clock.Clock) (*Store, error) {
	log := zerolog.Ctx(ctx)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create DATA_DIR: %w", err)
	}
	warnIfOpen(log, dataDir)
	driver, location, err := Location(dataDir, databaseURL)
	if err != nil {
		return nil, err
	}
	uri := location
	sqlite := driver != "postgres"
	if sqlite {
		// The file is created 0600 before SQLite opens it; its -wal and -shm files inherit that.
		f, err := os.OpenFile(location, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("failed to create database file: %w", err)
		}
		f.Close()
		if err := os.Chmod(location, 0o600); err != nil {
			return nil, fmt.Errorf("failed to restrict database file: %w", err)
		}
		uri = "file:" + filepath.ToSlash(location) + "?_txlock=immediate&_stmt_cache_size=128&_cache_size=-512"
	}
	db, err := dbutil.NewWithDialect(uri, driver)
	if err != nil {
		return nil, fmt.Errorf("failed to open database: %w", err)
	}
	db.RawDB.SetMaxIdleConns(16)
	if err := db.RawDB.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to connect to the database: %w", err)
	}
	db.Log = dbutil.ZeroLogger(*log)
	own := db.Child("matrix2mqtt_bridge_version", upgradeTable, db.Log)
	if err := own.Upgrade(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to upgrade outbox tables: %w", err)
	}
	s := &Store{Root: db, db: own, clock: clk, reads: newReadCache()}
	if sqlite {
		s.writes = &sync.Mutex{}
	}
	return s, nil
}

// warnIfOpen warns when DATA_DIR, which holds the database with the access token and the
// encryption keys, can be read or entered by other users: MkdirAll makes it 0700, but one that
// existed before keeps its mode.
func warnIfOpen(log *zerolog.Logger, dataDir string) {
	info, err := os.Stat(dataDir)
	if err != nil || info.Mode().Perm()&0o077 == 0 {
		return
	}
	log.Warn().Str("data_dir", dataDir).Str("mode", fmt.Sprintf("%04o", info.Mode().Perm())).
		Msg("DATA_DIR can be read by other users; it holds the access token and the encryption keys: chmod 700 it")
}

// Close closes the database.
func (s *Store) Close() error { return s.Root.Close() }

// lockWrites takes the write lock (on SQLite) and returns its unlock.
func (s *Store) lockWrites() func() {
	if s.writes == nil {
		return func() {}
	}
	s.writes.Lock()
	return s.writes.Unlock
}

// RunPruning forgets done MQTT keys and published inbound events once they are older than their
// retention, every hour until ctx ends (and once at start).
func (s *Store) RunPruning(ctx context.Context) {
	for {
		if err := s.Prune(ctx); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune old keys")
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(pruneEvery):
		}
	}
}

// Prune forgets what is past its retention.
func (s *Store) Prune(ctx context.Context) error {
	now := s.clock.Now()
	defer s.lockWrites()()
	if err := s.pruneDone(ctx, now.Add(-DoneRetention)); err != nil {
		return err
	}
	if err := s.pruneOptions(ctx, now.Add(-OptionsRetention)); err != nil {
		return err
	}
	if err := s.pruneSent(ctx, now.Add(-ReadRetention)); err != nil {
		return err
	}
	if err := s.prunePolls(ctx, now.Add(-OptionsRetention)); err != nil {
		return err
	}
	if err := s.pruneRequests(ctx, now.Add(-RequestRetention)); err != nil {
		return err
	}
	return s.pruneInbound(ctx, now.Add(-InboundRetention))
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// insertRows runs "INSERT INTO <into> VALUES (…), (…) <suffix>" for n rows of columns values
// each, sqlChunk rows per statement; row appends the values of row i to args.
func (s *Store) insertRows(ctx context.Context, into, suffix string, columns, n int, row func(i int, args []any) []any) error {
	return s.insertRowsReturning(ctx, into, suffix, columns, n, row, nil)
}

// insertRowsReturning is insertRows for a suffix with RETURNING: scan reads each returned row.
func (s *Store) insertRowsReturning(ctx context.Context, into, suffix string, columns, n int, row func(i int, args []any) []any, scan func(dbutil.Scannable) error) error {
	for start := 0; start < n; start += sqlChunk {
		count := min(sqlChunk, n-start)
		var query strings.Builder
		query.WriteString("INSERT INTO ")
		query.WriteString(into)
		query.WriteString(" VALUES ")
		args := make([]any, 0, count*columns)
		for i := range count {
			if i > 0 {
				query.WriteString(", ")
			}
			query.WriteByte('(')
			query.WriteString(marks(i*columns+1, columns))
			query.WriteByte(')')
			args = row(start+i, args)
		}
		query.WriteByte(' ')
		query.WriteString(suffix)
		if scan == nil {
			if _, err := s.db.Exec(ctx, query.String(), args...); err != nil {
				return err
			}
			continue
		}
		rows, err := s.db.Query(ctx, query.String(), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// marks returns "$from, $from+1, …" for n placeholders.
func marks(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}
