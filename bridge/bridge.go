// Package bridge wires matrix2mqtt together: it builds the parts in order with their
// dependencies, routes MQTT topics to them, serves HTTP, and starts and stops everything in
// order. Each concern lives in a package of its own below it; see docs/architecture.md.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/inbound"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/intake"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Options are what the bridge needs besides its Config.
type Options struct {
	Version string
	// Clock defaults to the real clock.
	Clock clock.Clock
	// BirthDelay is the wait before announcing to Home Assistant again after its birth
	// message; nil means a random 1 to 5 seconds.
	BirthDelay func() time.Duration
}

// Bridge connects one Matrix account to one MQTT broker.
type Bridge struct {
	cfg    Config
	opts   Options
	log    zerolog.Logger
	topics wire.Topics
	// work is the context of the bridge's work: it outlives the Run context during the drain.
	work       context.Context
	cancelWork context.CancelFunc

	store   *store.Store
	matrix  *matrix.Client
	mqtt    *mqtt.Client
	targets *targets.Targets
	stats   *stats.Stats
	outbox  *outbox.Outbox
	intake  *intake.Intake
	inbound *inbound.Inbound
	ha      *discovery.Announcer
	rooms   *roomList
	metrics *metrics.Metrics
	media   *media.Media
	// ready is closed once Matrix is logged in.
	ready chan struct{}
}

// New builds the bridge's parts in order, each with its dependencies; Run starts them. ctx
// carries the logger.
func New(ctx context.Context, cfg Config, opts Options) (*Bridge, error) {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	b := &Bridge{
		cfg: cfg, opts: opts, ready: make(chan struct{}),
		log: zerolog.Ctx(ctx).With().Str("component", "bridge").Logger(),
	}
	b.work, b.cancelWork = context.WithCancel(context.WithoutCancel(ctx))
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	var err error
	if b.store, err = store.Open(b.work, cfg.DataDir, cfg.DatabaseURL, opts.Clock); err != nil {
		return nil, err
	}
	registry := catalog.Default()
	b.topics = wire.Topics{Base: cfg.MQTT.BaseTopic, Shortcuts: registry.Shortcuts()}
	targetsCfg := cfg.Targets
	targetsCfg.Groups, targetsCfg.BroadcastAll = cfg.Rooms.Groups, cfg.Rooms.BroadcastAll
	b.targets = targets.New(targetsCfg, cfg.Commands.Rooms...)
	b.stats = stats.New(opts.Clock)
	b.rooms = &roomList{}
	b.metrics = metrics.New(metrics.Sources{
		Outbox:   b.outboxDepth,
		LastSync: func() time.Time { return b.matrix.LastSync() },
		Now:      opts.Clock.Now,
	})
	if b.matrix, err = matrix.New(b.work, cfg.Matrix, b.store.Root, matrix.Options{DataDir: cfg.DataDir, OnRoomsChanged: b.roomsChanged,
		OnRoomUpgraded: b.roomUpgraded,
		OnSync:         b.metrics.SyncDone, OnUndecryptable: b.metrics.DecryptionFailed,
	}); err != nil {
		return nil, err
	}
	if b.mqtt, err = mqtt.New(b.work, cfg.MQTT, mqtt.Options{
		Will:      mqtt.Will{Topic: b.topics.State(), Payload: "offline"},
		OnConnect: b.announce,
	}); err != nil {
		return nil, err
	}
	respond := responder{pub: b.mqtt, topics: b.topics}
	env := actions.Env{Matrix: countedMedia{b.matrix, b.metrics}, Targets: b.targets, Keys: b.store, Options: b.store,
		Tags: b.store, Live: cfg.Live, Polls: b.store, SentMessages: b.store}
	if env.Templates, err = cfg.Rooms.Templates(cfg.Targets.Names); err != nil {
		return nil, err
	}
	if err := b.learnRooms(); err != nil {
		return nil, err
	}
	if env.Media, err = media.New(cfg.Media, cfg.DataDir); err != nil {
		return nil, err
	}
	b.media, env.Publisher, env.Topics = env.Media, b.mqtt, b.topics
	if err := pruneSpool(b.work, b.store, env.Media); err != nil {
		return nil, err
	}
	b.outbox = outbox.New(outbox.Deps{
		Store: b.store, Registry: registry, Env: env, Sync: b.matrix, Responder: respond,
		Counters: b.stats, Clock: opts.Clock, MaxAge: cfg.OutboxMaxAge, Ready: b.ready,
		Metrics: b.metrics,
	})
	env.Outbox = b.outbox
	b.intake = intake.New(intake.Deps{
		Topics: b.topics, Registry: registry, Queue: b.outbox, Env: env, Responder: respond,
		Stats: b.stats, Clock: opts.Clock, Ready: b.ready,
		MaxPayloadBytes: cfg.MaxPayloadBytes, RequestTimeout: cfg.RequestTimeout,
		MaxFileBytes: cfg.Media.MaxBytes, Metrics: b.metrics, Requests: b.store,
	})
	var holder inbound.Holder // media messages wait for their download
	if env.Media.Downloads() {
		holder = inbound.MediaDownloads{}
	}
	b.inbound = inbound.New(inbound.Deps{
		Topics: b.topics, Pub: b.mqtt, Dedupe: b.store, Queue: b.outbox, Keys: b.targets, Stats: b.stats,
		Filters: []inbound.Filter{
			inbound.NewCommands(cfg.Commands, b.targets),
			inbound.NewCallbacks(cfg.Callbacks, b.store),
			inbound.NewReads(b.store),
			inbound.NewPolls(b.store, b.matrix),
			inbound.EntityEvents{Names: b.targets},
		},
		Metrics: b.metrics, Holder: holder,
	})
	b.ha = discovery.NewAnnouncer(cfg.Discovery, haDevice(cfg, opts.Version, b.targets.Names()), b.mqtt, opts.BirthDelay)
	b.listen()
	ok = true
	return b, nil
}

// listen is the MQTT routing table: which topics go to which part.
func (b *Bridge) listen() {
	b.mqtt.Listen(b.topics.RequestFilter(), b.intake.Offer)
	for _, action := range b.topics.Shortcuts {
		b.mqtt.Listen(b.topics.Shortcut(action, "+"), b.intake.Offer)
	}
	if b.cfg.Discovery.Enabled {
		b.mqtt.Listen(b.cfg.Discovery.StatusTopic, b.ha.OnStatus)
	}
}

// Run runs the bridge until ctx ends, then shuts down in order: stop taking requests, let the
// lanes drain for up to SHUTDOWN_TIMEOUT, stop syncing, publish offline, disconnect, close the
// database.
func (b *Bridge) Run(ctx context.Context) error {
	defer b.close()
	ctx = b.log.WithContext(ctx)
	work := b.log.WithContext(b.work)
	if err := b.mqtt.Connect(ctx); err != nil {
		return err
	}
	if err := b.outbox.Open(work); err != nil {
		return err
	}
	var wg sync.WaitGroup
	syncCtx, stopSync := context.WithCancel(work)
	defer stopSync()
	// A Matrix error that retrying cannot mend (a crypto store that does not match the
	// account, say) stops the bridge.
	fatal := make(chan error, 1)
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	run(func() {
		if err := b.matrix.Run(syncCtx, b.inbound, b.loggedIn); err != nil && !errors.Is(err, context.Canceled) {
			fatal <- err
		}
	})
	run(func() { b.intake.Run(work) })
	run(func() { b.stats.PublishLoop(syncCtx, b.publishStats) })
	run(func() { b.ha.Run(syncCtx) })
	run(func() { b.watchMatrix(syncCtx) })
	run(func() { b.store.RunPruning(syncCtx) })
	run(func() { b.media.RunPruning(syncCtx, b.opts.Clock) })
	stopHTTP, err := b.serveHTTP(work)
	if err != nil {
		stopSync()
		b.intake.Close()
		b.cancelWork()
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
	b.intake.Close()
	drain, cancelDrain := context.WithTimeout(work, b.cfg.ShutdownTimeout)
	if !b.outbox.Drain(drain) {
		b.log.Warn().Int("pending", b.stats.Snapshot().OutboxPending).Msg("Outbox not drained in time; the rest is kept for the next start")
	}
	if !b.intake.Drain(drain) {
		b.log.Warn().Msg("Immediate requests not answered in time; they are cancelled")
	}
	cancelDrain()
	stopSync()
	stopHTTP()
	b.cancelWork()
	wg.Wait()
	b.intake.Wait()
	b.outbox.Wait()

	final, cancelFinal := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := b.mqtt.Publish(final, b.topics.State(), true, []byte("offline")); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish offline state")
	}
	cancelFinal()
	b.mqtt.Disconnect(500 * time.Millisecond)
	b.log.Info().Msg("Stopped")
	return runErr
}

// outboxDepth is the outbox's figures for the metrics.
func (b *Bridge) outboxDepth() (int, time.Duration) {
	s := b.stats.Snapshot()
	return s.OutboxPending, time.Duration(s.OldestPendingAgeS * float64(time.Second))
}

// close ends the work and closes the database.
func (b *Bridge) close() {
	b.cancelWork()
	if b.store != nil {
		if err := b.store.Close(); err != nil {
			b.log.Warn().Err(err).Msg("Failed to close the database")
		}
	}
}

// loggedIn runs once Matrix is logged in, before the first sync: the targets learn the rooms
// of friendly names and command rooms (so the first sync's commands are recognised),
// deliveries may start, and info is published. The Matrix client reports the rooms right after.
func (b *Bridge) loggedIn(ctx context.Context) {
	rooms, err := b.matrix.Rooms(ctx)
	if err != nil {
		b.log.Warn().Err(err).Msg("Failed to list rooms")
	}
	b.targets.Learn(ctx, rooms, b.matrix)
	select {
	case <-b.ready:
	default:
		close(b.ready)
	}
	b.publishInfo(ctx)
}

// roomsChanged runs, on the Matrix client's own goroutine, whenever the joined rooms changed:
// the targets learn them, and `<base>/bridge/rooms` is published.
func (b *Bridge) roomsChanged(ctx context.Context, rooms []wire.Room) {
	b.targets.Learn(ctx, rooms, b.matrix)
	b.rooms.set(rooms)
	b.publishRooms(ctx, rooms)
}

// watchMatrix keeps matrix_connected in the stats current, for the connectivity sensor. It
// polls: the sync loop reports its health only when asked.
func (b *Bridge) watchMatrix(ctx context.Context) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		b.stats.SetMatrixConnected(b.matrix.Healthy())
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// CheckE2EE reports the encryption state of the bot's device from the stored session and the
// homeserver, changing nothing: the `e2ee status` subcommand.
func CheckE2EE(ctx context.Context, cfg Config) (wire.E2EEStatus, error) {
	st, err := store.Open(ctx, cfg.DataDir, cfg.DatabaseURL, clock.Real{})
	if err != nil {
		return wire.E2EEStatus{}, err
	}
	defer st.Close()
	mc, err := matrix.New(ctx, cfg.Matrix, st.Root, matrix.Options{DataDir: cfg.DataDir})
	if err != nil {
		return wire.E2EEStatus{}, fmt.Errorf("failed to prepare the Matrix client: %w", err)
	}
	return mc.CheckE2EE(ctx)
}

// Run builds the bridge and runs it until ctx ends.
func Run(ctx context.Context, cfg Config, opts Options) error {
	b, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	return b.Run(ctx)
}

// learnRooms gives the rooms that create_room named their friendly names again, and sends
// requests for upgraded rooms to their replacements.
func (b *Bridge) learnRooms() error {
	keys, err := b.store.RoomKeys(b.work)
	if err != nil {
		return err
	}
	for key, roomID := range keys {
		if !b.targets.Define(key, roomID) {
			b.log.Warn().Str("key", key).Stringer("room_id", roomID).Msg("Room key is a TARGETS name; TARGETS wins")
		}
	}
	upgrades, err := b.store.RoomUpgrades(b.work)
	if err != nil {
		return err
	}
	for oldRoom, newRoom := range upgrades {
		b.targets.Upgrade(oldRoom, newRoom)
	}
	return nil
}

// roomUpgraded runs when the Matrix client followed a room upgrade: requests, names and keys of
// the old room go to the new one from now on, also after a restart, and `<base>/bridge/rooms`
// lists the new room in the old one's place.
func (b *Bridge) roomUpgraded(ctx context.Context, oldRoom, newRoom id.RoomID) {
	if err := b.store.SaveRoomUpgrade(ctx, oldRoom, newRoom); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("Failed to save room upgrade")
	}
	b.targets.Upgrade(oldRoom, newRoom)
	if rooms, known := b.rooms.get(); known {
		b.publishRooms(ctx, rooms)
	}
}

// pruneSpool removes the spooled files of send_media requests that never reached the outbox.
func pruneSpool(ctx context.Context, st *store.Store, m *media.Media) error {
	return m.PruneSpool(func(fn func(json.RawMessage)) error {
		return st.EachPending(ctx, func(e *store.Entry) { fn(e.Request) })
	})
}
