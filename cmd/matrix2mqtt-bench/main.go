// Command matrix2mqtt-bench measures what the bridge costs next to a direct Matrix client, and
// its own ceiling. It starts Mosquitto and Dendrite itself (internal/testenv) unless given URLs,
// runs the bridge as a subprocess (so that its RSS and CPU time are its own) or in-process, runs
// the scenarios, and prints a table and, with -json, the figures as JSON.
//
//	go run -tags goolm ./cmd/matrix2mqtt-bench            # full run, a few minutes
//	go run -tags goolm ./cmd/matrix2mqtt-bench -short     # smoke run, well under a minute
//
// Figures that are compared are measured side by side in one run, alternating (A, B, A, B…),
// and reported as ratios: these machines are noisy, and only the ratio means something.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

// options are the command's flags.
type options struct {
	short       bool
	scenarios   map[string]bool
	n           int
	concurrency []int
	rounds      int
	ceilingN    int
	window      int
	lanes       int
	inboundN    int
	bursts      int
	singles     int
	burstRooms  int
	burstSize   int
	e2eeN       int
	mediaN      int
	faultsN     int
	faultsSeed  uint64
	devices     []int
	roomCounts  []int
	inproc      bool
	jsonOut     string
	cpuProfile  string
	memProfile  string
	profileOf   string
	mqttURL     string
	homeserver  string
	botUser     string
	botPass     string
	peerUser    string
	peerPass    string
	keep        bool
	bridgeEnv   map[string]string
	verbose     bool

	backlogN      int
	backlogStatus int
	cpus          int // 0: all
}

var allScenarios = []string{"delivered", "ceiling", "inbound", "e2ee", "memory", "media", "e2ee-ceiling", "backlog", "faults"}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("matrix2mqtt-bench", flag.ContinueOnError)
	o := &options{}
	fs.BoolVar(&o.short, "short", false, "smoke run: small counts, well under a minute (defaults of the count flags shrink)")
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run: "+strings.Join(allScenarios, ", "))
	fs.IntVar(&o.n, "n", 0, "delivered: messages per side (bridge and direct) per concurrency level (default 600, -short 60)")
	conc := fs.String("concurrency", "", "delivered: concurrency levels, each with as many rooms (default 1,8; -short 4)")
	fs.IntVar(&o.rounds, "rounds", 0, "delivered, e2ee: alternating rounds A, B, A, B… (default 6, -short 2)")
	fs.IntVar(&o.ceilingN, "ceiling-n", 0, "ceiling: messages (default 20000, -short 2000)")
	fs.IntVar(&o.window, "window", 256, "ceiling: requests in flight (publish → response); keep below Mosquitto's queue of 1000")
	fs.IntVar(&o.lanes, "lanes", 16, "ceiling: rooms the load is spread over (the bridge keeps order per room)")
	fs.IntVar(&o.inboundN, "inbound-n", 0, "inbound on Dendrite: messages in the burst (default 500, -short 100)")
	fs.IntVar(&o.bursts, "bursts", 0, "inbound on the stand-in: sync responses (default 10, -short 3)")
	fs.IntVar(&o.singles, "singles", 0, "inbound on the stand-in: sync responses of one event each, for the latency (default 100, -short 20)")
	fs.IntVar(&o.burstRooms, "burst-rooms", 20, "inbound on the stand-in: rooms per sync response")
	fs.IntVar(&o.burstSize, "burst-size", 50, "inbound on the stand-in: events per room per sync response (the bridge's filter limit is 50)")
	fs.IntVar(&o.e2eeN, "e2ee-n", 0, "e2ee: messages per side (default 300, -short 30)")
	fs.IntVar(&o.mediaN, "media-n", 0, "media: ~1 MB images per side, alternating one by one (default 20, -short 3)")
	fs.IntVar(&o.backlogN, "backlog-n", 0, "backlog: send requests queued during the outage (default 100000, -short 2000)")
	fs.IntVar(&o.backlogStatus, "backlog-status", 429, "backlog: HTTP status of /send during the outage: 429 (M_LIMIT_EXCEEDED, not sent) or 503 (M_UNKNOWN, may have arrived: each lane's head waits for a sync)")
	fs.IntVar(&o.cpus, "cpus", 0, "run the bridges with GOMAXPROCS=N, pinned to the first N CPUs with taskset (0: all CPUs)")
	fs.IntVar(&o.faultsN, "faults-n", 0, "faults: sends per run, with faults and without (default 300, -short 60)")
	fs.Uint64Var(&o.faultsSeed, "faults-seed", 1, "faults: seed of the fault proxy's random draws")
	devs := fs.String("devices", "1,10", "e2ee: recipient device counts")
	rooms := fs.String("rooms", "", "memory: joined room counts (default 100,1000; -short 10,30)")
	fs.BoolVar(&o.inproc, "inproc", false, "run the bridge in this process (bridge.Run) instead of a subprocess; RSS, CPU and allocations then include the benchmark's own")
	fs.StringVar(&o.jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the bridge during the -profile scenario to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write the bridge's allocation profile after the -profile scenario to this file")
	fs.StringVar(&o.profileOf, "profile", "ceiling", "scenario the profiles cover: delivered, ceiling, inbound (the stand-in part), e2ee-ceiling, or backlog (memory while the backlog waits)")
	fs.StringVar(&o.mqttURL, "mqtt-url", "", "use this broker instead of starting Mosquitto (with -homeserver)")
	fs.StringVar(&o.homeserver, "homeserver", "", "use this homeserver instead of starting Dendrite; needs -bot-user, -bot-password, -peer-user, -peer-password")
	fs.StringVar(&o.botUser, "bot-user", "", "with -homeserver: the bridge's account")
	fs.StringVar(&o.botPass, "bot-password", "", "with -homeserver: its password")
	fs.StringVar(&o.peerUser, "peer-user", "", "with -homeserver: the other user (creates rooms, watches /sync, sends inbound)")
	fs.StringVar(&o.peerPass, "peer-password", "", "with -homeserver: its password")
	extraEnv := fs.String("bridge-env", "", "extra settings for the bridges on the homeserver, KEY=value,KEY=value (e.g. E2EE=false)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (bridge logs, databases, server logs)")
	fs.BoolVar(&o.verbose, "v", false, "print progress details")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	pick := func(v *int, full, short int) {
		if *v == 0 {
			*v = full
			if o.short {
				*v = short
			}
		}
	}
	pick(&o.n, 600, 60)
	pick(&o.rounds, 6, 2)
	pick(&o.ceilingN, 20000, 2000)
	pick(&o.inboundN, 500, 100)
	pick(&o.bursts, 10, 3)
	pick(&o.singles, 100, 20)
	pick(&o.e2eeN, 300, 30)
	pick(&o.mediaN, 20, 3)
	pick(&o.backlogN, 100000, 2000)
	pick(&o.faultsN, 300, 60)
	var err error
	if *conc == "" {
		*conc = map[bool]string{false: "1,8", true: "4"}[o.short]
	}
	if o.concurrency, err = intList(*conc); err != nil {
		return nil, fmt.Errorf("-concurrency: %w", err)
	}
	if *rooms == "" {
		*rooms = map[bool]string{false: "100,1000", true: "10,30"}[o.short]
	}
	if o.roomCounts, err = intList(*rooms); err != nil {
		return nil, fmt.Errorf("-rooms: %w", err)
	}
	slices.Sort(o.roomCounts)
	if o.devices, err = intList(*devs); err != nil {
		return nil, fmt.Errorf("-devices: %w", err)
	}
	o.bridgeEnv = map[string]string{}
	for _, kv := range strings.Split(*extraEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("-bridge-env: %q is not KEY=value", kv)
		}
		o.bridgeEnv[k] = v
	}
	o.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("-scenarios: %q is not one of %s", s, strings.Join(allScenarios, ", "))
		}
		o.scenarios[s] = true
	}
	if (o.mqttURL == "") != (o.homeserver == "") {
		return nil, errors.New("-mqtt-url and -homeserver go together")
	}
	if o.homeserver != "" && (o.botUser == "" || o.botPass == "" || o.peerUser == "" || o.peerPass == "") {
		return nil, errors.New("-homeserver needs -bot-user, -bot-password, -peer-user and -peer-password")
	}
	if o.rounds < 1 || o.window < 1 || o.lanes < 1 {
		return nil, errors.New("-rounds, -window and -lanes must be positive")
	}
	if o.backlogN < 1 || (o.backlogStatus != http.StatusTooManyRequests && o.backlogStatus != http.StatusServiceUnavailable) {
		return nil, errors.New("-backlog-n must be positive and -backlog-status 429 or 503")
	}
	if o.cpus < 0 || o.cpus > runtime.NumCPU() || (o.cpus > 0 && o.inproc) {
		return nil, fmt.Errorf("-cpus must be between 0 (all) and %d, and needs the bridge as a subprocess", runtime.NumCPU())
	}
	return o, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bridge:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "matrix2mqtt-bench:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "matrix2mqtt-bench:", err)
		os.Exit(1)
	}
}

// bench is one run: the servers, the accounts it made, the work directory and the report.
type bench struct {
	o       *options
	rep     *report
	env     *testenv.Env
	mqttURL string
	hs      string
	dir     string
	hc      *http.Client
	tag     string
	bridges []*bridgeProc
	main    *mainSetup
	stand   *standInSetup
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.rep.Started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) debugf(format string, args ...any) {
	if b.o.verbose {
		b.logf(format, args...)
	}
}

func run(o *options) error {
	limit := 45 * time.Minute
	if o.short {
		limit = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{o: o, rep: newReport(), hc: newHTTPClient(64), tag: strconv.FormatInt(time.Now().Unix()%100000, 36)}
	var err error
	if b.dir, err = os.MkdirTemp("", "matrix2mqtt-bench-"); err != nil {
		return err
	}
	defer func() {
		if o.keep {
			b.logf("work directory kept: %s", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}()
	b.rep.Settings = map[string]any{
		"short": o.short, "n": o.n, "concurrency": o.concurrency, "rounds": o.rounds, "ceiling_n": o.ceilingN,
		"window": o.window, "lanes": o.lanes, "inbound_n": o.inboundN, "bursts": o.bursts,
		"burst_events": o.burstRooms * o.burstSize, "e2ee_n": o.e2eeN, "media_n": o.mediaN, "faults_n": o.faultsN, "faults_seed": o.faultsSeed, "devices": o.devices, "rooms": o.roomCounts,
		"backlog_n": o.backlogN, "backlog_status": o.backlogStatus, "bridge_cpus": o.cpus, "bridge": bridgeMode(o),
	}
	m := b.rep.Machine
	b.logf("machine: %d CPUs (%s), %d MB; bridge as %s", m.CPUs, m.CPUModel, m.MemoryMB, b.rep.Settings["bridge"])

	if o.homeserver != "" {
		b.mqttURL, b.hs = o.mqttURL, strings.TrimRight(o.homeserver, "/")
		b.rep.Settings["servers"] = "given: " + b.mqttURL + ", " + b.hs
	} else {
		start := time.Now()
		b.env, err = testenv.Start(ctx, testenv.Options{LogDir: filepath.Join(b.dir, "servers"), Keep: o.keep})
		if err != nil {
			return err
		}
		defer b.env.Close()
		b.mqttURL, b.hs = b.env.MQTTURL, b.env.HomeserverURL
		b.rep.Settings["servers"] = "started: Mosquitto and Dendrite (internal/testenv)"
		b.logf("Mosquitto %s and Dendrite %s started in %s", b.mqttURL, b.hs, time.Since(start).Round(time.Millisecond))
	}
	defer func() {
		for _, bp := range b.bridges {
			_ = bp.stop()
		}
		if b.main != nil {
			b.main.w.close()
		}
		if b.stand != nil {
			b.stand.s.close()
		}
	}()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"delivered", b.delivered},
		{"inbound", b.inbound},
		{"ceiling", b.ceiling},
		{"backlog", b.backlog},
		{"e2ee", b.e2ee},
		{"memory", b.memory},
		{"media", b.media},
		{"e2ee-ceiling", b.e2eeCeiling},
		{"faults", b.faults},
	}
	var failed []string
	for _, s := range steps {
		if !o.scenarios[s.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		settleLimit := 30 * time.Second
		if o.short {
			settleLimit = 10 * time.Second
		}
		waited, busy, err := settle(ctx, settleLimit)
		if err != nil {
			b.logf("could not tell whether the machine is quiet: %v", err)
		}
		b.rep.detail(s.name, "settle_s", waited.Seconds())
		start := time.Now()
		b.logf("scenario %s (machine %.0f%% busy after waiting %s for it to settle)", s.name, busy*100, waited.Round(100*time.Millisecond))
		if err := s.fn(ctx); err != nil {
			b.logf("scenario %s failed: %v", s.name, err)
			b.rep.add(row{Section: s.name, Measure: "FAILED: " + err.Error(), Bridge: nanFloat()})
			failed = append(failed, s.name)
		}
		b.rep.detail(s.name, "duration_s", time.Since(start).Seconds())
	}
	b.rep.Duration = time.Since(b.rep.Started).Seconds()
	fmt.Println()
	fmt.Printf("matrix2mqtt benchmark — %d CPUs (%s), %d MB, %s; %s, bridge as %s; %.0f s\n\n",
		m.CPUs, m.CPUModel, m.MemoryMB, m.Go, b.rep.Settings["servers"], b.rep.Settings["bridge"], b.rep.Duration)
	b.rep.printTable(os.Stdout)
	fmt.Println()
	fmt.Println("reference: direct = a Go net/http client doing PUT /send with the same concurrency on the same Dendrite;")
	fmt.Println("sync client = a Go client long-polling /sync; stand-in = the benchmark's in-process HTTP server that")
	fmt.Println("answers /send at once (not a homeserver). ratio = bridge / reference, measured alternately in one run.")
	if o.scenarios["media"] {
		fmt.Println("media: direct = the bot on its own mautrix crypto device encrypting, uploading and sending the same")
		fmt.Println("JPEG; + thumbnail = also the bridge's image work (bridge/media.Describe: thumbnail, blurhash) and upload.")
	}
	if o.jsonOut != "" {
		if err := b.rep.writeJSON(o.jsonOut); err != nil {
			return err
		}
		fmt.Printf("JSON: %s\n", o.jsonOut)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stopped: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func nanFloat() float64 { return nan }
