package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	rpprof "runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
)

// childArg makes this binary run the bridge instead of the benchmark: the subprocess whose RSS
// and CPU time are the bridge's alone. It runs exactly what cmd/matrix2mqtt runs
// (bridge.Run with the config from the environment), plus a loopback debug server
// (pprof, runtime.MemStats) that the benchmark reads.
const childArg = "bridge-child"

// memStats are the runtime figures the child reports.
type memStats struct {
	Mallocs    uint64 `json:"mallocs"`
	TotalAlloc uint64 `json:"total_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	Sys        uint64 `json:"sys"`
	NumGC      uint32 `json:"num_gc"`
	Goroutines int    `json:"goroutines"`
}

func readMemStats() memStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{Mallocs: m.Mallocs, TotalAlloc: m.TotalAlloc, HeapInuse: m.HeapInuse, Sys: m.Sys, NumGC: m.NumGC, Goroutines: runtime.NumGoroutine()}
}

// debugMux serves what the benchmark reads from a bridge: memstats, CPU profile start/stop,
// the allocation profile, and the usual pprof pages.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/memstats", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(readMemStats())
	})
	var profMu sync.Mutex
	var profFile *os.File
	mux.HandleFunc("/cpuprofile/start", func(w http.ResponseWriter, r *http.Request) {
		profMu.Lock()
		defer profMu.Unlock()
		f, err := os.Create(r.URL.Query().Get("path"))
		if err == nil {
			if err = rpprof.StartCPUProfile(f); err != nil {
				f.Close()
			} else {
				profFile = f
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/cpuprofile/stop", func(w http.ResponseWriter, _ *http.Request) {
		profMu.Lock()
		defer profMu.Unlock()
		if profFile != nil {
			rpprof.StopCPUProfile()
			profFile.Close()
			profFile = nil
		}
	})
	mux.HandleFunc("/allocprofile", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Create(r.URL.Query().Get("path"))
		if err == nil {
			err = rpprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	return mux
}

// runChild is the bridge subprocess: config from the environment, log to stderr, the debug
// server's address as the first line on stdout, stop on SIGINT/SIGTERM.
func runChild() error {
	cfg, err := bridge.LoadConfig(os.Environ())
	if err != nil {
		return err
	}
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, debugMux()) }()
	fmt.Printf("debug=%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bridge.Run(log.WithContext(ctx), cfg, bridge.Options{Version: "bench"})
}

// bridgeProc is one bridge run by the benchmark, as a subprocess (default) or in-process.
type bridgeProc struct {
	name    string
	env     map[string]string
	inproc  bool
	logPath string
	// cpus, when set, confines the subprocess to that many CPUs (-cpus; see childCmd).
	cpus int

	started time.Time
	pid     int
	debug   string // host:port of the child's debug server
	cmd     *exec.Cmd
	exited  chan struct{}
	cancel  context.CancelFunc
	runErr  error
}

func (b *bridgeProc) environ() []string {
	var out []string
	for k, v := range b.env {
		out = append(out, k+"="+v)
	}
	return out
}

// start launches the bridge; started is the moment just before exec (or Run).
func (b *bridgeProc) start() error {
	b.exited = make(chan struct{})
	if b.inproc {
		cfg, err := bridge.LoadConfig(b.environ())
		if err != nil {
			return err
		}
		logFile, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		log := zerolog.New(logFile).Level(zerolog.WarnLevel).With().Timestamp().Logger()
		ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
		b.cancel, b.pid, b.started = cancel, os.Getpid(), time.Now()
		go func() {
			b.runErr = bridge.Run(ctx, cfg, bridge.Options{Version: "bench"})
			logFile.Close()
			close(b.exited)
		}()
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := b.childCmd(self)
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	b.started = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	b.cmd, b.pid = cmd, cmd.Process.Pid
	lines := bufio.NewReader(stdout)
	first, err := lines.ReadString('\n')
	go func() { _, _ = io.Copy(io.Discard, lines) }()
	go func() {
		b.runErr = cmd.Wait()
		logFile.Close()
		close(b.exited)
	}()
	if err != nil || !strings.HasPrefix(first, "debug=") {
		b.stop()
		return fmt.Errorf("bridge %s did not start (see %s): %v", b.name, b.logPath, err)
	}
	b.debug = strings.TrimSpace(strings.TrimPrefix(first, "debug="))
	return nil
}

// stop asks the bridge to shut down (SIGINT) and waits for it.
func (b *bridgeProc) stop() error {
	if b.inproc {
		b.cancel()
	} else if b.cmd != nil {
		_ = b.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-b.exited:
	case <-time.After(45 * time.Second):
		if b.cmd != nil {
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
		return fmt.Errorf("bridge %s did not stop within 45s", b.name)
	}
	if b.runErr != nil && !b.inproc {
		var ee *exec.ExitError
		if errors.As(b.runErr, &ee) {
			return fmt.Errorf("bridge %s exited: %v (see %s)", b.name, b.runErr, b.logPath)
		}
	}
	return nil
}

// rss returns the resident set size and its peak (VmHWM), in bytes.
func (b *bridgeProc) rss() (cur, peak int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			cur = n * 1024
		case "VmHWM":
			peak = n * 1024
		}
	}
	return cur, peak
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on Linux).
const clockTicks = 100

// cpu returns the user+system CPU time the bridge process used so far.
func (b *bridgeProc) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.pid))
	if err != nil {
		return 0
	}
	s := string(data)
	// Fields after the command name, which is in parentheses and may contain spaces.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

func (b *bridgeProc) memStats() (memStats, error) {
	if b.inproc {
		return readMemStats(), nil
	}
	var m memStats
	resp, err := http.Get("http://" + b.debug + "/memstats")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// cpuProfile starts a CPU profile of the bridge into path; the returned func stops it.
func (b *bridgeProc) cpuProfile(path string) (func(), error) {
	path, _ = filepath.Abs(path)
	if b.inproc {
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		if err := rpprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		return func() { rpprof.StopCPUProfile(); f.Close() }, nil
	}
	if err := b.debugGet("/cpuprofile/start?path=" + path); err != nil {
		return nil, err
	}
	return func() { _ = b.debugGet("/cpuprofile/stop") }, nil
}

func (b *bridgeProc) allocProfile(path string) error {
	path, _ = filepath.Abs(path)
	if b.inproc {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return rpprof.Lookup("allocs").WriteTo(f, 0)
	}
	return b.debugGet("/allocprofile?path=" + path)
}

func (b *bridgeProc) debugGet(path string) error {
	resp, err := http.Get("http://" + b.debug + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", path, data)
	}
	return nil
}

// usage is what a bridge used over a stretch of work: CPU time, allocations, and the RSS peak
// sampled meanwhile.
type usage struct {
	CPU      time.Duration
	Mallocs  uint64
	Bytes    uint64
	PeakRSS  int64
	Measured bool
}

// meter samples a bridge's RSS while work runs, and takes CPU and allocation deltas.
type meter struct {
	b      *bridgeProc
	cpu0   time.Duration
	mem0   memStats
	peak   int64
	stopCh chan struct{}
	done   chan struct{}
}

func startMeter(b *bridgeProc) *meter {
	m := &meter{b: b, cpu0: b.cpu(), stopCh: make(chan struct{}), done: make(chan struct{})}
	m.mem0, _ = b.memStats()
	go func() {
		defer close(m.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if cur, _ := b.rss(); cur > m.peak {
				m.peak = cur
			}
			select {
			case <-m.stopCh:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *meter) stop() usage {
	close(m.stopCh)
	<-m.done
	u := usage{CPU: m.b.cpu() - m.cpu0, PeakRSS: m.peak}
	if mem, err := m.b.memStats(); err == nil {
		u.Mallocs, u.Bytes, u.Measured = mem.Mallocs-m.mem0.Mallocs, mem.TotalAlloc-m.mem0.TotalAlloc, true
	}
	return u
}
