// Package bridge is the core of matrix2mqtt: it routes MQTT topics to actions, validates
// requests, keeps the durable outbox, maps Matrix events to MQTT messages and owns the order of
// start-up and shutdown.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq" // registers the postgres driver
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the sqlite3-fk-wal driver
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// resumeDelay holds back the requests found in the outbox at start. The head of each lane may
// have been in flight when the bridge stopped; a homeserver that is still working on it would
// not recognise the retry's transaction ID yet (Dendrite, for one, records it only when the
// first request finishes) and would deliver the message twice.
const resumeDelay = 3 * time.Second

// publisher publishes to MQTT and waits for the broker's acknowledgement.
type publisher interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
	PublishOrdered(ctx context.Context, topic string, retained bool, payload []byte) (wait func(context.Context) error)
}

// sender is what the outbox needs from Matrix.
type sender interface {
	Resolve(ctx context.Context, target string) (id.RoomID, error)
	Send(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error)
	Redact(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error)
	// NextSync is closed once the next sync was handed over, and SentWithTxn tells from the
	// echoes seen in sync whether a transaction ID was sent already. Healthy tells whether sync
	// works now, and HealthySince when it last started working again.
	NextSync() <-chan struct{}
	SentWithTxn(ctx context.Context, txnID string) (id.EventID, bool)
	Healthy() bool
	HealthySince() time.Time
}

// Options are what the bridge needs besides its Config.
type Options struct {
	Version string
	// Clock defaults to the real clock.
	Clock Clock
	// BirthDelay is the wait before announcing to Home Assistant again after its birth
	// message; nil means a random 1 to 5 seconds.
	BirthDelay func() time.Duration
}

// Bridge connects one Matrix account to one MQTT broker.
type Bridge struct {
	cfg    Config
	opts   Options
	clock  Clock
	topics topics
	log    zerolog.Logger
	db     *dbutil.Database
	outbox *outbox
	matrix *matrix.Client
	mqtt   *mqtt.Client
	// pub and out are the parts of MQTT and Matrix the outbox uses, apart for unit tests.
	pub     publisher
	out     sender
	lanes   *lanes
	stats   *stats
	intake  *intake
	ready   chan struct{} // closed once Matrix is logged in
	keys    *roomKeys
	limiter chan struct{} // bounds concurrent immediate actions
	// immediateQueued counts immediate actions started and not yet answered.
	immediateQueued atomic.Int64
	// asleep counts lanes that wait for a retry or a scheduled time, which a shutdown need not
	// wait for.
	asleep atomic.Int64

	flushMu sync.Mutex
	flushCh chan struct{} // closed and replaced by outbox_flush

	// work is the context of the bridge's work, for lanes started outside the intake.
	work     context.Context
	commands *commandFilter
	ha       *haDiscovery
}

// New prepares a bridge; Run starts it.
func New(cfg Config, opts Options) *Bridge {
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	b := &Bridge{
		cfg:     cfg,
		opts:    opts,
		clock:   opts.Clock,
		topics:  topics{base: cfg.MQTT.BaseTopic},
		ready:   make(chan struct{}),
		keys:    newRoomKeys(cfg.Targets),
		limiter: make(chan struct{}, 16),
		flushCh: make(chan struct{}),
	}
	b.stats = newStats(b.clock)
	b.commands = newCommandFilter(cfg.Commands, b.keys)
	b.ha = newHADiscovery(cfg, opts, b.keys.names())
	b.lanes = newLanes(b.deliver)
	return b
}

// Run runs the bridge until ctx ends, then shuts down in order: stop taking requests, let the
// lanes drain for up to SHUTDOWN_TIMEOUT, stop syncing, publish offline, disconnect, close the
// database.
func (b *Bridge) Run(ctx context.Context) error {
	b.log = zerolog.Ctx(ctx).With().Str("component", "bridge").Logger()
	// work outlives ctx during the drain, and is cancelled at the end of it.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	b.work = work

	if err := b.openDatabase(work); err != nil {
		return err
	}
	defer b.db.Close()
	mc, err := matrix.New(work, b.cfg.Matrix, b.db, matrix.Options{DataDir: b.cfg.DataDir})
	if err != nil {
		return err
	}
	b.matrix, b.out, b.commands.rooms = mc, mc, mc

	b.intake = newIntake(b)
	b.mqtt, err = mqtt.New(work, b.cfg.MQTT, mqtt.Options{
		Will:          mqtt.Will{Topic: b.topics.state(), Payload: "offline"},
		Subscriptions: append([]string{b.topics.requestFilter(), b.topics.sendFilter()}, b.ha.subscriptions()...),
		OnMessage:     b.onMessage,
		OnConnect:     b.announce,
	})
	if err != nil {
		return err
	}
	b.pub, b.ha.pub, b.ha.sub, b.ha.log = b.mqtt, b.mqtt, b.mqtt, b.log
	if err := b.mqtt.Connect(ctx); err != nil {
		return err
	}

	pending, err := b.outbox.pending(work)
	if err != nil {
		return err
	}
	resumeAt := b.clock.Now().Add(resumeDelay)
	for _, e := range pending {
		if e.NotBefore.Before(resumeAt) {
			e.NotBefore = resumeAt
		}
		e.inDoubt = b.out.NextSync()
		b.stats.enqueued(e)
		b.lanes.push(work, e)
	}
	if len(pending) > 0 {
		b.log.Info().Int("count", len(pending)).Msg("Resuming requests from the outbox")
	}

	var wg sync.WaitGroup
	syncCtx, stopSync := context.WithCancel(work)
	defer stopSync()
	// A Matrix error that retrying cannot mend (a crypto store that does not match the
	// account, say) stops the bridge.
	fatal := make(chan error, 1)
	wg.Add(5)
	go func() {
		defer wg.Done()
		if err := b.matrix.Run(syncCtx, b, b.loggedIn); err != nil && !errors.Is(err, context.Canceled) {
			fatal <- err
		}
	}()
	go func() {
		defer wg.Done()
		b.intake.run(work)
	}()
	go func() {
		defer wg.Done()
		b.stats.publishLoop(syncCtx, b.publishStats)
	}()
	go func() {
		defer wg.Done()
		b.ha.run(syncCtx)
	}()
	go func() {
		defer wg.Done()
		b.watchMatrix(syncCtx)
	}()
	stopHTTP, err := b.serveHTTP(work)
	if err != nil {
		stopSync()
		b.intake.close()
		cancelWork()
		wg.Wait()
		return err
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
		b.log.Error().Err(runErr).Msg("Matrix client stopped")
	}
	b.log.Info().Msg("Shutting down")
	b.intake.close()
	drain, cancelDrain := context.WithTimeout(work, b.cfg.ShutdownTimeout)
	if !b.lanes.drain(drain, &b.asleep) {
		b.log.Warn().Int("pending", b.stats.snapshot().OutboxPending).Msg("Outbox not drained in time; the rest is kept for the next start")
	}
	cancelDrain()
	stopSync()
	stopHTTP()
	cancelWork()
	wg.Wait()
	b.lanes.wait(context.Background())

	final, cancelFinal := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := b.mqtt.Publish(final, b.topics.state(), true, []byte("offline")); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish offline state")
	}
	cancelFinal()
	b.mqtt.Disconnect(500 * time.Millisecond)
	b.log.Info().Msg("Stopped")
	return runErr
}

func (b *Bridge) openDatabase(ctx context.Context) error {
	if err := os.MkdirAll(b.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("failed to create DATA_DIR: %w", err)
	}
	driver, location, err := b.cfg.database()
	if err != nil {
		return err
	}
	uri := location
	if driver != "postgres" {
		// The file is created 0600 before SQLite opens it; its -wal and -shm files inherit that.
		f, err := os.OpenFile(location, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("failed to create database file: %w", err)
		}
		f.Close()
		if err := os.Chmod(location, 0o600); err != nil {
			return fmt.Errorf("failed to restrict database file: %w", err)
		}
		uri = "file:" + filepath.ToSlash(location) + "?_txlock=immediate"
	}
	db, err := dbutil.NewWithDialect(uri, driver)
	if err != nil {
		return fmt.Errorf("failed to open database: %w", err)
	}
	db.RawDB.SetMaxIdleConns(16)
	if err := db.RawDB.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("failed to connect to the database: %w", err)
	}
	db.Log = dbutil.ZeroLogger(b.log)
	own := db.Child("matrix2mqtt_bridge_version", upgradeTable, db.Log)
	if err := own.Upgrade(ctx); err != nil {
		db.Close()
		return fmt.Errorf("failed to upgrade outbox tables: %w", err)
	}
	b.db = db
	b.outbox = newOutbox(own, driver != "postgres")
	return nil
}

// loggedIn runs once Matrix is logged in: it opens the outbox lanes and learns the rooms of
// friendly names.
func (b *Bridge) loggedIn(ctx context.Context) {
	select {
	case <-b.ready:
	default:
		close(b.ready)
	}
	b.keys.learn(ctx, b.matrix)
	b.publishInfo(ctx)
	b.publishRooms(ctx)
}

// announce runs after every MQTT (re)connect: state, info, rooms and stats are retained, so
// they are published again in case the broker lost them; so is the Home Assistant discovery.
func (b *Bridge) announce(ctx context.Context) {
	if err := b.mqtt.Publish(ctx, b.topics.state(), true, []byte("online")); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish online state")
	}
	select {
	case <-b.ready:
		b.publishInfo(ctx)
		b.publishRooms(ctx)
	default:
	}
	b.stats.touch()
	b.ha.announce(ctx)
}

// Info is the retained payload of `<base>/bridge/info`.
type Info struct {
	Version    string            `json:"version"`
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Homeserver string            `json:"homeserver"`
	BaseTopic  string            `json:"base_topic"`
	E2EE       matrix.E2EEStatus `json:"e2ee"`
	Targets    []string          `json:"targets"`
	StartedAt  time.Time         `json:"started_at"`
}

func (b *Bridge) publishInfo(ctx context.Context) {
	info := Info{
		Version:    b.opts.Version,
		UserID:     b.matrix.UserID().String(),
		DeviceID:   b.matrix.DeviceID().String(),
		Homeserver: b.matrix.Homeserver(),
		BaseTopic:  b.cfg.MQTT.BaseTopic,
		E2EE:       b.matrix.E2EEStatus(ctx),
		Targets:    b.keys.names(),
		StartedAt:  b.stats.started,
	}
	b.publishJSON(ctx, b.topics.info(), true, info)
}

func (b *Bridge) publishRooms(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		rooms, err := b.matrix.Rooms(ctx)
		if err == nil {
			b.publishJSON(ctx, b.topics.rooms(), true, b.keys.annotate(rooms))
			return
		}
		b.log.Warn().Err(err).Msg("Failed to list rooms")
		if attempt == 2 || !b.sleep(ctx, time.Second, false) {
			return
		}
	}
}

func (b *Bridge) publishStats(ctx context.Context, s Stats) {
	b.publishJSON(ctx, b.topics.stats(), true, s)
}

func (b *Bridge) publishJSON(ctx context.Context, topic string, retained bool, v any) {
	payload, err := json.Marshal(v)
	if err != nil {
		b.log.Error().Err(err).Str("topic", topic).Msg("Failed to encode payload")
		return
	}
	if err := b.pub.Publish(ctx, topic, retained, payload); err != nil {
		b.log.Warn().Err(err).Str("topic", topic).Msg("Failed to publish")
	}
}

// serveHTTP serves /healthz (200 when both connections are up) and /stats on HTTP_LISTEN.
func (b *Bridge) serveHTTP(ctx context.Context) (stop func(), err error) {
	if b.cfg.HTTPListen == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !b.mqtt.IsConnected() || !b.matrix.Healthy() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.stats.snapshot())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	ln, err := net.Listen("tcp", b.cfg.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on HTTP_LISTEN %s: %w", b.cfg.HTTPListen, err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	return func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}, nil
}

// CheckE2EE reports the encryption state of the bot's device from the stored session and the
// homeserver, changing nothing: the `e2ee status` subcommand.
func CheckE2EE(ctx context.Context, cfg Config) (matrix.E2EEStatus, error) {
	b := New(cfg, Options{})
	b.log = *zerolog.Ctx(ctx)
	if err := b.openDatabase(ctx); err != nil {
		return matrix.E2EEStatus{}, err
	}
	defer b.db.Close()
	mc, err := matrix.New(ctx, cfg.Matrix, b.db, matrix.Options{DataDir: cfg.DataDir})
	if err != nil {
		return matrix.E2EEStatus{}, err
	}
	return mc.CheckE2EE(ctx)
}
