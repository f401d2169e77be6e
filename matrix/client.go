// Package matrix is the bridge's Matrix side: login and a session kept in the database, the sync
// loop with its saved token, normalised inbound events, send primitives, room tracking and target
// resolution. Encryption is package e2ee's.
package matrix

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/e2ee"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/echoes"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/media"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/statestore"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// ErrTokenInvalid means the homeserver rejected the access token and the bridge has no password
// to log in again with.
var ErrTokenInvalid = errors.New("the access token was rejected and no password is configured")

// Handler receives what the sync loop produces. HandleSync must return only once the batch is
// safely handed over: the sync token is saved after it returns nil.
type Handler interface {
	HandleSync(ctx context.Context, batch *Batch) error
	// HandleNotice tells the operator something; it must not block for long.
	HandleNotice(ctx context.Context, n wire.Notice)
}

// Options are what the client needs besides its Config.
type Options struct {
	// DataDir holds the generated pickle key and the recovery key file.
	DataDir string
	// OnRoomsChanged receives the joined rooms once after login, and again whenever they
	// changed: joined or left, renamed, their alias, encryption or members, or m.direct. It is
	// called from a goroutine of its own, so it never holds back a sync's hand-over or token;
	// one call at a time, and changes that come while it runs are reported by the next call.
	OnRoomsChanged func(ctx context.Context, rooms []wire.Room)
	// OnRoomUpgraded, when set, is told that the bot followed a room upgrade into newRoom, whose
	// predecessor is oldRoom.
	OnRoomUpgraded func(ctx context.Context, oldRoom, newRoom id.RoomID)
	// OnSync, when set, hears the outcome of every sync request (nil for success), for metrics.
	// It must not block.
	OnSync func(err error)
	// OnUndecryptable, when set, hears of every event that could not be decrypted (withheld:
	// its sender withheld the key), for metrics. It must not block.
	OnUndecryptable func(withheld bool)
}

// Client is the bot's Matrix connection.
type Client struct {
	cfg    Config
	opts   Options
	cli    *mautrix.Client
	rootDB *dbutil.Database // shared with the crypto store
	db     *dbutil.Database // this package's own tables
	state  *statestore.Store
	log    zerolog.Logger

	loginMu sync.Mutex

	syncer    *mautrix.DefaultSyncer
	collectMu sync.Mutex
	collect   *Batch // the batch being filled while a sync response is processed

	rooms *roomTracker
	// roomsChanged holds a signal for the goroutine that calls Options.OnRoomsChanged.
	roomsChanged chan struct{}
	handler      Handler // set by Run before anything calls it
	echoes       *echoes.Echoes
	syncMu       sync.Mutex
	nextSync     chan struct{} // closed when the next sync response was handed over
	crypto       *e2ee.Crypto  // nil when E2EE is off
	// encryptionChecked holds the rooms whose encryption state was asked of the homeserver
	// (see roomEncrypted).
	encryptionChecked sync.Map
	// e2eeBroken is why E2EE is enabled but not running (the identity is locked), or "".
	e2eeBroken string
	media      *media.Transfer

	healthMu     sync.Mutex
	healthy      bool
	healthySince time.Time
	lastSync     time.Time
	// tokenInvalid is set once the operator was told that the token is rejected.
	tokenInvalid atomic.Bool
}

// New prepares the client and its tables. It does not contact the homeserver.
func New(ctx context.Context, cfg Config, db *dbutil.Database, opts Options) (*Client, error) {
	log := zerolog.Ctx(ctx).With().Str("component", "matrix").Logger()
	cli, err := mautrix.NewClient(cfg.Homeserver, cfg.UserID, "")
	if err != nil {
		return nil, fmt.Errorf("failed to create Matrix client: %w", err)
	}
	cli.Log = log
	cli.DefaultHTTPRetries = 0 // the outbox retries, with the same transaction ID
	cli.IgnoreRateLimit = true // the outbox honours retry_after_ms itself
	// The outbox sends to many rooms at once: keep a connection per lane instead of
	// http.DefaultTransport's 2 idle ones, which closes and dials a connection per request.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	cli.Client = &http.Client{Timeout: cfg.SyncTimeout + 30*time.Second, Transport: transport}

	own := db.Child("matrix2mqtt_matrix_version", upgradeTable, dbutil.ZeroLogger(log))
	if err := own.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade Matrix session tables: %w", err)
	}
	state, err := statestore.New(log.WithContext(ctx), db)
	if err != nil {
		return nil, err
	}
	cli.StateStore = state

	c := &Client{
		cfg:          cfg,
		opts:         opts,
		cli:          cli,
		rootDB:       db,
		db:           own,
		state:        state,
		log:          log,
		syncer:       mautrix.NewDefaultSyncer(),
		echoes:       echoes.New(own),
		nextSync:     make(chan struct{}),
		roomsChanged: make(chan struct{}, 1),
	}
	c.rooms = newRoomTracker(c)
	c.media = media.New(cli)
	cli.Syncer = c.syncer
	c.syncer.OnEvent(cli.StateStoreSyncHandler)
	c.syncer.OnEvent(c.onEvent)
	return c, nil
}

// UserID is the bot's user ID.
func (c *Client) UserID() id.UserID { return c.cli.UserID }

// DeviceID is the bot's device ID, known after Login.
func (c *Client) DeviceID() id.DeviceID { return c.cli.DeviceID }

// Homeserver is the homeserver URL.
func (c *Client) Homeserver() string { return c.cli.HomeserverURL.String() }

// Healthy reports whether the last sync request succeeded.
func (c *Client) Healthy() bool {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	return c.healthy
}

// HealthySince is when sync last started working again: after the first sync, or the first one
// after a failed sync.
func (c *Client) HealthySince() time.Time {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	return c.healthySince
}

// LastSync is when a sync request last succeeded; zero before the first.
func (c *Client) LastSync() time.Time {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	return c.lastSync
}

func (c *Client) setHealthy(h bool) {
	c.healthMu.Lock()
	now := time.Now()
	if h && !c.healthy {
		c.healthySince = now
	}
	if h {
		c.lastSync = now
	}
	c.healthy = h
	c.healthMu.Unlock()
}

type session struct {
	homeserver  string
	deviceID    id.DeviceID
	accessToken string
}

func (c *Client) loadSession(ctx context.Context) (*session, error) {
	var s session
	err := c.db.QueryRow(ctx,
		"SELECT homeserver, device_id, access_token FROM matrix2mqtt_session WHERE user_id=$1",
		c.cfg.UserID).Scan(&s.homeserver, &s.deviceID, &s.accessToken)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to load Matrix session: %w", err)
	}
	return &s, nil
}

func (c *Client) saveSession(ctx context.Context) error {
	_, err := c.db.Exec(ctx, `
		INSERT INTO matrix2mqtt_session (user_id, homeserver, device_id, access_token) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET homeserver=excluded.homeserver, device_id=excluded.device_id,
			access_token=excluded.access_token`,
		c.cfg.UserID, c.cfg.Homeserver, c.cli.DeviceID, c.cli.AccessToken)
	if err != nil {
		return fmt.Errorf("failed to save Matrix session: %w", err)
	}
	return nil
}

// Login makes the client usable: a configured access token wins, then the session kept in the
// database, then a password login (reusing the stored device ID, so the device stays the same).
func (c *Client) Login(ctx context.Context) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	stored, err := c.loadSession(ctx)
	if err != nil {
		return err
	}
	var storedDevice id.DeviceID
	if stored != nil && stored.homeserver == c.cfg.Homeserver {
		storedDevice = stored.deviceID
	}
	switch {
	case c.cfg.AccessToken != "":
		if err := c.useToken(ctx, c.cfg.AccessToken); err != nil {
			return err
		}
	case stored != nil && stored.homeserver == c.cfg.Homeserver:
		err := c.useToken(ctx, stored.accessToken)
		if errors.Is(err, mautrix.MUnknownToken) {
			c.log.Warn().Msg("Stored access token was rejected, logging in again with the password")
			err = c.passwordLogin(ctx, storedDevice)
		}
		if err != nil {
			return err
		}
	default:
		if err := c.passwordLogin(ctx, storedDevice); err != nil {
			return err
		}
	}
	c.log.Info().Stringer("user_id", c.cli.UserID).Stringer("device_id", c.cli.DeviceID).Msg("Logged in to Matrix")
	return c.saveSession(ctx)
}

func (c *Client) useToken(ctx context.Context, token string) error {
	c.cli.SetCredentials(c.cfg.UserID, token)
	who, err := c.cli.Whoami(ctx)
	if err != nil {
		return fmt.Errorf("failed to check access token: %w", err)
	}
	if who.UserID != c.cfg.UserID {
		return fmt.Errorf("failed to log in: the access token belongs to %s, not MATRIX_USER_ID %s", who.UserID, c.cfg.UserID)
	}
	c.cli.DeviceID = who.DeviceID
	return nil
}

func (c *Client) passwordLogin(ctx context.Context, deviceID id.DeviceID) error {
	if c.cfg.Password == "" {
		return ErrTokenInvalid
	}
	resp, err := c.cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(c.cfg.UserID)},
		Password:                 c.cfg.Password,
		DeviceID:                 deviceID,
		InitialDeviceDisplayName: c.cfg.DeviceName,
		StoreCredentials:         true,
	})
	if err != nil {
		return fmt.Errorf("failed to log in with password: %w", err)
	}
	if resp.UserID != c.cfg.UserID {
		return fmt.Errorf("failed to log in: the homeserver says the account is %s, not %s", resp.UserID, c.cfg.UserID)
	}
	return nil
}

// recoverAuth handles an M_UNKNOWN_TOKEN from any request: it logs in again when a password
// is configured, and otherwise tells the operator. It reports whether a retry may succeed.
func (c *Client) recoverAuth(ctx context.Context, failed error) bool {
	h := c.handler
	if !errors.Is(failed, mautrix.MUnknownToken) {
		return false
	}
	if c.cfg.Password == "" {
		if c.tokenInvalid.CompareAndSwap(false, true) {
			c.log.Error().Err(failed).Msg("Access token rejected and no password configured; set a new MATRIX_ACCESS_TOKEN")
			h.HandleNotice(ctx, wire.Notice{Type: "token_invalid", Message: "The homeserver rejected the access token and no password is configured: set a new MATRIX_ACCESS_TOKEN and restart. Queued messages are kept."})
		}
		return false
	}
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if err := c.passwordLogin(ctx, c.cli.DeviceID); err != nil {
		c.log.Error().Err(err).Msg("Failed to log in again after the token was rejected")
		h.HandleNotice(ctx, wire.Notice{Type: "login_failed", Message: err.Error()})
		return false
	}
	if err := c.saveSession(ctx); err != nil {
		c.log.Error().Err(err).Msg("Failed to save new session")
	}
	c.log.Info().Msg("Logged in again after the access token was rejected")
	return true
}

// notify tells the operator something through the handler, once Run has set it.
func (c *Client) notify(ctx context.Context, n wire.Notice) {
	if c.handler != nil {
		c.handler.HandleNotice(ctx, n)
	}
}

// Backoff returns the wait before attempt n (0-based): exponential from base, capped, with
// ±20% jitter.
func Backoff(n int, base, limit time.Duration) time.Duration {
	d := base
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - jitter
	}
	return d + jitter
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
