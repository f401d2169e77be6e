package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// postgresLibDir holds one directory per installed PostgreSQL major version on Debian,
// each with the server and client programs in bin/.
const postgresLibDir = "/usr/lib/postgresql"

// maxSocketPath is the longest Unix-domain socket path the kernel accepts (sun_path
// holds 108 bytes including the terminating NUL).
const maxSocketPath = 107

// maxIdentifier is the longest name PostgreSQL keeps whole (NAMEDATALEN - 1).
const maxIdentifier = 63

// Postgres is a throwaway PostgreSQL server started by StartPostgres. It trusts every
// connection from 127.0.0.1 and trades durability for speed (fsync, synchronous_commit
// and full_page_writes are off). Its methods are safe for concurrent use.
type Postgres struct {
	// URL connects to the "postgres" database as the superuser "postgres":
	// postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
	URL string
	// Addr is the server's host:port.
	Addr string
	// Dir holds the data directory, the Unix socket and postgres.log.
	Dir string

	binDir string

	mu   sync.Mutex
	proc *process // nil once closed
}

// postgresUser says which user runs the server: nil for the current user, otherwise
// the credential of the "postgres" system user, because PostgreSQL refuses to run as
// root.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("failed to look up the postgres user (run scripts/install-deps.sh): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the uid of the postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the gid of the postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// findPostgres returns the directory that holds initdb, postgres, pg_isready and psql:
// /usr/lib/postgresql/<version>/bin for the newest installed version, or else the
// directory of initdb in PATH.
func findPostgres() (string, error) {
	var versions []int
	entries, _ := os.ReadDir(postgresLibDir) // a missing directory means no Debian install
	for _, e := range entries {
		v, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(postgresLibDir, e.Name(), "bin", "postgres")); err == nil {
			versions = append(versions, v)
		}
	}
	if len(versions) > 0 {
		return filepath.Join(postgresLibDir, strconv.Itoa(slices.Max(versions)), "bin"), nil
	}
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("failed to find PostgreSQL in %s or PATH (run scripts/install-deps.sh): %w",
			postgresLibDir, err)
	}
	return filepath.Dir(initdb), nil
}

// StartPostgres initializes a new PostgreSQL cluster in dir/postgres, starts it on a
// free loopback port and returns once it accepts connections. dir must exist; the
// caller removes it after Close.
//
// When running as root, the server runs as the "postgres" system user: StartPostgres
// gives that user dir/postgres and adds the search (x) permission to dir and its
// parents where that user lacks it.
func StartPostgres(ctx context.Context, dir string) (*Postgres, error) {
	binDir, err := findPostgres()
	if err != nil {
		return nil, err
	}
	cred, err := postgresUser()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve the postgres directory: %w", err)
	}
	base := filepath.Join(dir, "postgres")
	dataDir := filepath.Join(base, "data")
	socketDir := filepath.Join(base, "run")
	if err := os.MkdirAll(socketDir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create the postgres directory: %w", err)
	}
	if cred != nil {
		if err := chownTree(base, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		if err := makeSearchable(dir, cred.Uid, cred.Gid); err != nil {
			return nil, err
		}
	}

	initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"--pgdata", dataDir, "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.Dir = "/" // the caller's working directory may be unreachable for cred
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("failed to initialize the postgres cluster: %w: %s", err, out)
	}

	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ports[0])
	if len(filepath.Join(socketDir, ".s.PGSQL."+port)) > maxSocketPath {
		socketDir = "" // TCP only; a longer path would stop the server from starting
	}
	p := &Postgres{
		URL:    "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable",
		Addr:   "127.0.0.1:" + port,
		Dir:    base,
		binDir: binDir,
	}
	ready := func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "pg_isready"),
			"--dbname", p.conninfo("postgres"), "--timeout", "1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_isready: %w: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	p.proc, err = startPostmaster(ctx, ready, cred, filepath.Join(base, "postgres.log"),
		filepath.Join(binDir, "postgres"),
		"-D", dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+port,
		"-c", "unix_socket_directories="+socketDir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off")
	if err != nil {
		return nil, err
	}
	return p, nil
}

// chownTree gives the directory tree at root to uid and gid.
func chownTree(root string, uid, gid int) error {
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("failed to give the postgres directory to the postgres user: %w", err)
	}
	return nil
}

// makeSearchable adds the search permission that uid and gid lack to dir and each of
// its parents, so that a process running as them can reach dir. Test directories such
// as testing.T.TempDir's parent are often mode 0700.
func makeSearchable(dir string, uid, gid uint32) error {
	for path := dir; ; path = filepath.Dir(path) {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("failed to make %s reachable for the postgres user: %w", dir, err)
		}
		bit := fs.FileMode(0o001)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			switch {
			case st.Uid == uid:
				bit = 0o100
			case st.Gid == gid:
				bit = 0o010
			}
		}
		if fi.Mode()&bit == 0 {
			mode := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
			if err := os.Chmod(path, mode|bit); err != nil {
				return fmt.Errorf("failed to make %s reachable for the postgres user: %w", dir, err)
			}
		}
		if parent := filepath.Dir(path); parent == path {
			return nil
		}
	}
}

// startPostmaster is startProcess for the postgres server, which may have to run as
// another user (cred; nil for the current user), from "/" since the caller's working
// directory may be unreachable for that user. The process's PID is the postmaster's, so
// stopPostmaster can signal it alone.
func startPostmaster(
	ctx context.Context, ready func(context.Context) error, cred *syscall.Credential,
	logPath, bin string, args ...string,
) (*process, error) {
	p, err := spawn("postgres", logPath, "/", cred, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, ready); err != nil {
		_ = stopPostmaster(p) // err already says what went wrong
		return nil, err
	}
	return p, nil
}

// stopPostmaster asks the postmaster for a fast shutdown (SIGINT: roll back open
// transactions, disconnect clients, write a checkpoint), then kills its process group if
// it is still running after stopTimeout. Unlike process.stop, it does not send SIGTERM,
// which the postmaster takes as a smart shutdown that waits for every client to
// disconnect. It is an error if the server had to be killed or had already exited.
func stopPostmaster(p *process) error {
	defer p.log.Close()
	select {
	case <-p.done:
		return fmt.Errorf("failed to stop %s: it had already exited (%v)", p.name, p.err)
	default:
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to stop %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("failed to stop %s within %s: killed it", p.name, stopTimeout)
}

// conninfo returns the libpq connection string for database db as the superuser; unlike
// a URL, it needs no escaping for any database name.
func (p *Postgres) conninfo(db string) string {
	host, port, _ := strings.Cut(p.Addr, ":")
	lit := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
	return fmt.Sprintf("host=%s port=%s user=postgres sslmode=disable dbname=%s", host, port, lit)
}

// psql runs the SQL in sql with psql against database db, stopping at the first error,
// and returns psql's output: unaligned rows, no headers or footers.
func (p *Postgres) psql(ctx context.Context, db, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, "psql"),
		"--no-psqlrc", "--quiet", "--no-align", "--tuples-only",
		"--set", "ON_ERROR_STOP=1", "--dbname", p.conninfo(db), "--command", sql)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// CreateDatabase creates an empty database, typically one per test, and returns its
// URL, like p.URL with the name in place of "postgres". The name may be any string
// without NUL bytes; it is case-sensitive and at most 63 bytes long.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	if len(name) > maxIdentifier {
		// PostgreSQL would truncate it, and the URL would name another database.
		return "", fmt.Errorf("failed to create database %q: the name is longer than %d bytes",
			name, maxIdentifier)
	}
	ident := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	if _, err := p.psql(ctx, "postgres", "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("failed to create database %q: %w", name, err)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     p.Addr,
		Path:     "/" + name,
		RawQuery: "sslmode=disable",
	}
	return u.String(), nil
}

// Close stops the server with a fast shutdown; clients see their connections drop. The
// data stays in Dir. Close may be called more than once.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	proc := p.proc
	p.proc = nil
	return stopPostmaster(proc)
}
