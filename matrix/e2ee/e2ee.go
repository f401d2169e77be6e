// Package e2ee is the bot device's end-to-end encryption: mautrix's crypto helper on the bridge's
// database, cross-signing, the server-side key backup, and encrypted events waiting for keys.
package e2ee

import (
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"

	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

const (
	pickleKeyFile   = "pickle.key"
	recoveryKeyFile = "recovery-key.txt"
)

// Options are what encryption needs from the Matrix side.
type Options struct {
	// Client is the logged-in Matrix client; Start makes it encrypt and decrypt.
	Client *mautrix.Client
	// DB is the bridge's database: the crypto store and the events waiting for keys are kept there.
	DB *dbutil.Database
	// Password is MATRIX_PASSWORD: with it the first start creates the cross-signing keys.
	Password string
	// DataDir holds the generated pickle key and the recovery key file.
	DataDir string
	// Notify tells the operator about a problem with the setup; noticeType names it.
	Notify func(ctx context.Context, noticeType, message string)
	// Undecryptable reports an event that could not be decrypted, at once or after waiting for
	// its keys.
	Undecryptable func(ctx context.Context, evt *event.Event, err error)
}

// Crypto is the encryption of the bot's device: it decrypts what sync brings, keeps the device
// cross-signed, and backs up the room keys.
type Crypto struct {
	cfg  Config
	opts Options
	log  zerolog.Logger

	helper *cryptohelper.CryptoHelper
	mach   *crypto.OlmMachine

	backupKey *backup.MegolmBackupKey
	version   id.KeyBackupVersion
	wake      chan struct{} // asks the backup loop to upload now

	waiting *waiting
}

// Start sets up encryption after login: the crypto store in the bridge's database, the device
// keys, cross-signing (bootstrapped on first start, or unlocked with the recovery key), and the
// key backup. It logs with the context's logger.
func Start(ctx context.Context, cfg Config, opts Options) (*Crypto, error) {
	c := newCrypto(ctx, cfg, opts)
	own := opts.DB.Child("matrix2mqtt_e2ee_version", upgradeTable, dbutil.ZeroLogger(c.log))
	if err := own.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade E2EE tables: %w", err)
	}
	c.waiting = newWaiting(own)
	helper, err := c.newHelper()
	if err != nil {
		return nil, err
	}
	helper.DecryptErrorCallback = c.decryptFailed
	if err := helper.Init(ctx); err != nil {
		// mautrix has no sentinel errors for these two; its messages are all there is to match.
		if strings.Contains(err.Error(), "disappeared") || strings.Contains(err.Error(), "mismatching device ID") {
			return nil, fmt.Errorf("failed to start encryption: the crypto store in DATA_DIR does not match the account on the homeserver "+
				"(was the homeserver reset, or the data dir copied?); move DATA_DIR away and start again with E2EE_RECOVERY_KEY: %w", err)
		}
		return nil, fmt.Errorf("failed to start encryption: %w", err)
	}
	c.helper, c.mach = helper, helper.Machine()
	c.mach.CryptoStore = newSessionCache(c.mach.CryptoStore)
	if cfg.ShareKeysWith == "cross-signed" {
		c.mach.SendKeysMinTrust = id.TrustStateCrossSignedTOFU
	}
	opts.Client.Crypto = helper
	if err := c.setUpCrossSigning(ctx); err != nil {
		opts.Client.Crypto = nil
		return nil, err
	}
	if err := c.setUpBackup(ctx); err != nil {
		c.log.Warn().Err(err).Msg("Key backup is not available")
		opts.Notify(ctx, "key_backup_unavailable", err.Error())
	}
	return c, nil
}

// Check reports the encryption state from the crypto store and the homeserver without changing
// anything on the account, for `matrix2mqtt e2ee status`. The client must be logged in.
func Check(ctx context.Context, cfg Config, opts Options) (wire.E2EEStatus, error) {
	c := newCrypto(ctx, cfg, opts)
	helper, err := c.newHelper()
	if err != nil {
		return wire.E2EEStatus{}, err
	}
	if err := helper.Init(ctx); err != nil {
		return wire.E2EEStatus{}, fmt.Errorf("failed to load the crypto store: %w", err)
	}
	c.helper, c.mach = helper, helper.Machine()
	c.loadBackupKey(ctx)
	if latest, err := opts.Client.GetKeyBackupLatestVersion(ctx); err == nil && c.backupKey != nil && latest.AuthData.PublicKey == backupPublicKey(c.backupKey) {
		c.version = latest.Version
	}
	return c.Status(ctx), nil
}

func newCrypto(ctx context.Context, cfg Config, opts Options) *Crypto {
	log := zerolog.Ctx(ctx).With().Str("component", "e2ee").Logger()
	return &Crypto{cfg: cfg, opts: opts, log: log, wake: make(chan struct{}, 1)}
}

// newHelper makes mautrix's crypto helper with its store in the bridge's database.
func (c *Crypto) newHelper() (*cryptohelper.CryptoHelper, error) {
	pickleKey, err := c.pickleKey()
	if err != nil {
		return nil, err
	}
	helper, err := cryptohelper.NewCryptoHelper(c.opts.Client, pickleKey, c.opts.DB)
	if err != nil {
		return nil, fmt.Errorf("failed to create crypto helper: %w", err)
	}
	return helper, nil
}

// pickleKey returns the configured pickle key, or the one kept in DATA_DIR, made on first start.
func (c *Crypto) pickleKey() ([]byte, error) {
	if c.cfg.PickleKey != "" {
		return []byte(c.cfg.PickleKey), nil
	}
	path := filepath.Join(c.opts.DataDir, pickleKeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(data))), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("failed to generate pickle key: %w", err)
	}
	key := base64.RawStdEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("failed to save pickle key: %w", err)
	}
	return []byte(key), nil
}

// Decrypt decrypts one encrypted event, such as one fetched by its ID.
func (c *Crypto) Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	return c.helper.Decrypt(ctx, evt)
}

// Status reports the device's encryption state.
func (c *Crypto) Status(ctx context.Context) wire.E2EEStatus {
	s := wire.E2EEStatus{Enabled: true, DeviceID: c.opts.Client.DeviceID.String(), Status: "no_cross_signing"}
	if own := c.mach.OwnIdentity(); own != nil {
		s.IdentityKey = own.IdentityKey.String()
	}
	hasKeys, verified, err := c.mach.GetOwnVerificationStatus(ctx)
	if err == nil {
		s.CrossSigning, s.DeviceCrossSigned = hasKeys, verified
	}
	if keys, err := c.mach.GetOwnCrossSigningPublicKeys(ctx); err == nil && keys != nil {
		s.MasterKey = keys.MasterKey.String()
	}
	switch {
	case s.DeviceCrossSigned:
		s.Status = "verified"
	case s.CrossSigning:
		s.Status = "unverified"
	}
	s.KeyBackup = c.version != "" && c.backupKey != nil
	s.KeyBackupVersion = string(c.version)
	if _, err := os.Stat(filepath.Join(c.opts.DataDir, recoveryKeyFile)); err == nil {
		s.RecoveryKeyFile = filepath.Join(c.opts.DataDir, recoveryKeyFile)
	}
	return s
}
