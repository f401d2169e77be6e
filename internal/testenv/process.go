package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	// startTimeout bounds how long a server may take to accept connections when the
	// caller's context has no earlier deadline.
	startTimeout = 60 * time.Second
	// stopTimeout is how long a server gets to exit after SIGTERM before it is killed.
	stopTimeout = 15 * time.Second
	// logTailLines is how many lines of a server's log go into a start error.
	logTailLines = 20
)

// process is a server started in its own process group, with its output appended to a
// log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{} // closed once the process has exited
	err     error         // the Wait error, set before done is closed
}

// startProcess starts bin with args in dir, appending its stdout and stderr to logPath,
// and waits until ready succeeds. If it does not, the process is stopped again.
func startProcess(
	ctx context.Context, ready func(context.Context) error,
	name, logPath, dir, bin string, args ...string,
) (*process, error) {
	p, err := spawn(name, logPath, dir, nil, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, ready); err != nil {
		_ = p.stop() // err already says what went wrong
		return nil, err
	}
	return p, nil
}

// spawn starts bin with args in dir, in its own process group, as the user of cred (nil:
// the current one), appending its stdout and stderr to logPath.
func spawn(name, logPath, dir string, cred *syscall.Credential, bin string, args ...string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open the %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady calls ready until it succeeds, the process exits or the context ends.
func (p *process) waitReady(ctx context.Context, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("failed to start %s: it exited (%v); end of %s:\n%s",
				p.name, p.err, p.logPath, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("failed to start %s: not ready (%w: %w); end of %s:\n%s",
				p.name, ctx.Err(), err, p.logPath, p.logTail())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if it is still running after
// stopTimeout. It is an error if the server had to be killed or had already exited.
func (p *process) stop() error {
	defer p.log.Close()
	select {
	case <-p.done:
		return fmt.Errorf("failed to stop %s: it had already exited (%v)", p.name, p.err)
	default:
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to stop %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("failed to stop %s within %s: killed it", p.name, stopTimeout)
}

// logTail returns the last lines of the process's log.
func (p *process) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(failed to read the log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("failed to find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
