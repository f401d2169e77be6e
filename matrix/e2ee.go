package matrix

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/crypto/ssss"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// E2EEConfig is the end-to-end encryption section of the config.
type E2EEConfig struct {
	Enabled bool `env:"E2EE" envDefault:"true"`
	// PickleKey encrypts the keys in the crypto store; when empty one is generated into
	// DATA_DIR/pickle.key on first start.
	PickleKey string `env:"E2EE_PICKLE_KEY"`
	// RecoveryKey unlocks the cross-signing keys and the key backup kept on the server: needed
	// when they were made elsewhere (Element) or when the data dir was lost.
	RecoveryKey string `env:"E2EE_RECOVERY_KEY"`
	// ShareKeysWith is which devices get the keys of the bot's messages: all, or cross-signed
	// (only devices their owner verified).
	ShareKeysWith string `env:"E2EE_SHARE_KEYS_WITH" envDefault:"all"`
}

// Validate reports the first setting that cannot work.
func (c E2EEConfig) Validate() error {
	switch c.ShareKeysWith {
	case "all", "cross-signed":
	default:
		return fmt.Errorf("E2EE_SHARE_KEYS_WITH: %q is not all or cross-signed", c.ShareKeysWith)
	}
	return nil
}

const (
	pickleKeyFile   = "pickle.key"
	recoveryKeyFile = "recovery-key.txt"
	// backupInterval is how often room keys not yet in the key backup are uploaded, besides
	// after every sync that brought some.
	backupInterval = time.Minute
)

// E2EEStatus is the encryption state of the bot's device, for `<base>/bridge/info` and
// `matrix2mqtt e2ee status`.
type E2EEStatus struct {
	Enabled bool `json:"enabled"`
	// Status sums it up: disabled, verified (the device is cross-signed by its owner),
	// unverified (cross-signing exists but this device is not signed), no_cross_signing.
	Status            string `json:"status"`
	DeviceID          string `json:"device_id,omitempty"`
	IdentityKey       string `json:"identity_key,omitempty"`
	CrossSigning      bool   `json:"cross_signing"`
	DeviceCrossSigned bool   `json:"device_cross_signed"`
	MasterKey         string `json:"master_key,omitempty"`
	KeyBackup         bool   `json:"key_backup"`
	KeyBackupVersion  string `json:"key_backup_version,omitempty"`
	RecoveryKeyFile   string `json:"recovery_key_file,omitempty"`
}

// e2ee is the crypto side of the client: mautrix's crypto helper plus cross-signing bootstrap and
// the key backup uploader.
type e2ee struct {
	c         *Client
	helper    *cryptohelper.CryptoHelper
	mach      *crypto.OlmMachine
	backupKey *backup.MegolmBackupKey
	version   id.KeyBackupVersion
	wake      chan struct{}
}

// initE2EE sets up encryption after login: the crypto store in the bridge's database, the
// device keys, cross-signing (bootstrapped on first start, or unlocked with the recovery key),
// and the key backup.
func (c *Client) initE2EE(ctx context.Context) error {
	pickleKey, err := c.pickleKey()
	if err != nil {
		return err
	}
	helper, err := cryptohelper.NewCryptoHelper(c.cli, pickleKey, c.rootDB)
	if err != nil {
		return fmt.Errorf("failed to create crypto helper: %w", err)
	}
	helper.DecryptErrorCallback = c.decryptFailed
	if err := helper.Init(ctx); err != nil {
		// mautrix has no sentinel errors for these two; its messages are all there is to match.
		if strings.Contains(err.Error(), "disappeared") || strings.Contains(err.Error(), "mismatching device ID") {
			return fmt.Errorf("failed to start encryption: the crypto store in DATA_DIR does not match the account on the homeserver "+
				"(was the homeserver reset, or the data dir copied?); move DATA_DIR away and start again with E2EE_RECOVERY_KEY: %w", err)
		}
		return fmt.Errorf("failed to start encryption: %w", err)
	}
	mach := helper.Machine()
	if c.cfg.E2EE.ShareKeysWith == "cross-signed" {
		mach.SendKeysMinTrust = id.TrustStateCrossSignedTOFU
	}
	c.cli.Crypto = helper
	c.e2ee = &e2ee{c: c, helper: helper, mach: mach, wake: make(chan struct{}, 1)}
	if err := c.e2ee.setUpCrossSigning(ctx); err != nil {
		return err
	}
	if err := c.e2ee.setUpBackup(ctx); err != nil {
		c.log.Warn().Err(err).Msg("Key backup is not available")
		c.notify(ctx, Notice{Type: "key_backup_unavailable", Message: err.Error()})
	}
	return nil
}

// pickleKey returns the configured pickle key, or the one kept in DATA_DIR, made on first start.
func (c *Client) pickleKey() ([]byte, error) {
	if c.cfg.E2EE.PickleKey != "" {
		return []byte(c.cfg.E2EE.PickleKey), nil
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

// recoveryKey is the configured recovery key, or the one this bridge wrote when it made the
// cross-signing keys.
func (e *e2ee) recoveryKey() string {
	if e.c.cfg.E2EE.RecoveryKey != "" {
		return strings.TrimSpace(e.c.cfg.E2EE.RecoveryKey)
	}
	data, err := os.ReadFile(filepath.Join(e.c.opts.DataDir, recoveryKeyFile))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return ""
}

// setUpCrossSigning makes sure the bot's device is signed by its owner's self-signing key.
func (e *e2ee) setUpCrossSigning(ctx context.Context) error {
	hasKeys, verified, err := e.mach.GetOwnVerificationStatus(ctx)
	if err != nil {
		return fmt.Errorf("failed to check cross-signing status: %w", err)
	}
	switch {
	case verified:
		return nil
	case !hasKeys && e.c.cfg.Password != "":
		return e.bootstrapCrossSigning(ctx)
	case !hasKeys:
		e.c.log.Warn().Msg("No cross-signing keys exist and without MATRIX_PASSWORD they cannot be made; the bot's device stays unverified")
		e.c.notify(ctx, Notice{Type: "cross_signing_missing", Message: "set MATRIX_PASSWORD (once) so that the bridge can create cross-signing keys, or create them in Element and set E2EE_RECOVERY_KEY"})
		return nil
	}
	recoveryKey := e.recoveryKey()
	if recoveryKey == "" {
		e.c.log.Warn().Msg("Cross-signing keys exist but E2EE_RECOVERY_KEY is not set; the bot's device stays unverified")
		e.c.notify(ctx, Notice{Type: "cross_signing_locked", Message: "cross-signing keys exist on the account: set E2EE_RECOVERY_KEY so that the bridge can sign its device"})
		return nil
	}
	if err := e.mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
		return fmt.Errorf("failed to unlock cross-signing with E2EE_RECOVERY_KEY: %w", err)
	}
	e.c.log.Info().Msg("Signed the bot's device with the cross-signing keys unlocked by the recovery key")
	return nil
}

// bootstrapCrossSigning makes master, self-signing and user-signing keys, keeps them in secret
// storage under a new recovery key, signs this device, and writes the recovery key to a file.
func (e *e2ee) bootstrapCrossSigning(ctx context.Context) error {
	recoveryKey, _, err := e.mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, e.c.cfg.Password, "")
	if err != nil {
		return fmt.Errorf("failed to create cross-signing keys: %w", err)
	}
	path := filepath.Join(e.c.opts.DataDir, recoveryKeyFile)
	content := "# matrix2mqtt recovery key for " + e.c.cli.UserID.String() + ": keep a copy outside DATA_DIR.\n" +
		"# It restores the bot's cross-signing and key backup (E2EE_RECOVERY_KEY) if DATA_DIR is lost.\n" + recoveryKey + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("failed to save the recovery key: %w", err)
	}
	if err := e.mach.SignOwnDevice(ctx, e.mach.OwnIdentity()); err != nil {
		return fmt.Errorf("failed to sign own device: %w", err)
	}
	if err := e.mach.SignOwnMasterKey(ctx); err != nil {
		return fmt.Errorf("failed to sign own master key: %w", err)
	}
	e.c.log.Warn().Str("path", path).
		Msg("Created cross-signing keys for the bot; its recovery key is in this file: copy it somewhere safe, it restores the bot's identity and message keys if DATA_DIR is lost")
	return nil
}

// setUpBackup finds the key backup to upload room keys to, creating one on first start, and
// restores room keys from it when this device has none (a new data dir).
func (e *e2ee) setUpBackup(ctx context.Context) error {
	store := e.mach.CryptoStore
	if secret, err := store.GetSecret(ctx, id.SecretMegolmBackupV1); err == nil && secret != "" {
		if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(secret, "=")); err == nil {
			e.backupKey, _ = backup.MegolmBackupKeyFromBytes(raw)
		}
	}
	var ssssKey *ssss.Key
	if e.backupKey == nil {
		key, err := e.unlockSSSS(ctx)
		if err != nil {
			return err
		}
		ssssKey = key
		if raw, err := e.mach.SSSS.GetDecryptedAccountData(ctx, event.AccountDataMegolmBackupKey, key); err == nil {
			if e.backupKey, err = backup.MegolmBackupKeyFromBytes(raw); err != nil {
				return fmt.Errorf("failed to read the key backup key from secret storage: %w", err)
			}
			if err := store.PutSecret(ctx, id.SecretMegolmBackupV1, base64.RawStdEncoding.EncodeToString(raw)); err != nil {
				return fmt.Errorf("failed to store the key backup key: %w", err)
			}
		}
	}
	latest, err := e.mach.Client.GetKeyBackupLatestVersion(ctx)
	switch {
	case errors.Is(err, mautrix.MNotFound):
		latest = nil
	case err != nil:
		return fmt.Errorf("failed to get the key backup version: %w", err)
	}
	if latest != nil && e.backupKey != nil && latest.AuthData.PublicKey == backupPublicKey(e.backupKey) {
		e.version = latest.Version
		if err := e.restoreIfEmpty(ctx); err != nil {
			e.c.log.Warn().Err(err).Msg("Failed to restore room keys from the key backup")
		}
		return e.mach.SetKeyBackupVersion(ctx, e.version)
	}
	if latest != nil {
		return errors.New("the account has a key backup whose key the bridge does not have: set E2EE_RECOVERY_KEY")
	}
	if ssssKey == nil || e.mach.CrossSigningKeys == nil {
		return errors.New("no key backup exists, and the bridge can make one only while it holds the cross-signing keys (first start, or with E2EE_RECOVERY_KEY)")
	}
	return e.createBackup(ctx, ssssKey)
}

// unlockSSSS returns the default secret storage key, unlocked with the recovery key.
func (e *e2ee) unlockSSSS(ctx context.Context) (*ssss.Key, error) {
	recoveryKey := e.recoveryKey()
	if recoveryKey == "" {
		return nil, errors.New("no recovery key to unlock secret storage with")
	}
	keyID, keyData, err := e.mach.SSSS.GetDefaultKeyData(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to get secret storage key: %w", err)
	}
	key, err := keyData.VerifyRecoveryKey(keyID, recoveryKey)
	if err != nil && !errors.Is(err, ssss.ErrUnverifiableKey) {
		return nil, fmt.Errorf("failed to unlock secret storage with the recovery key: %w", err)
	}
	return key, nil
}

func backupPublicKey(key *backup.MegolmBackupKey) id.Ed25519 {
	return id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))
}

// createBackup makes a new key backup version signed by the master key, and keeps its key in
// secret storage (so the recovery key restores it) and in the crypto store.
func (e *e2ee) createBackup(ctx context.Context, ssssKey *ssss.Key) error {
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		return fmt.Errorf("failed to generate key backup key: %w", err)
	}
	authData := backup.MegolmAuthData{PublicKey: backupPublicKey(key)}
	master := e.mach.CrossSigningKeys.MasterKey
	sig, err := master.SignJSON(&authData)
	if err != nil {
		return fmt.Errorf("failed to sign key backup: %w", err)
	}
	authData.Signatures = signatures.NewSingleSignature(e.c.cli.UserID, id.KeyAlgorithmEd25519, master.PublicKey().String(), sig)
	if err := e.mach.SSSS.SetEncryptedAccountData(ctx, event.AccountDataMegolmBackupKey, key.Bytes(), ssssKey); err != nil {
		return fmt.Errorf("failed to keep the key backup key in secret storage: %w", err)
	}
	if err := e.mach.CryptoStore.PutSecret(ctx, id.SecretMegolmBackupV1, base64.RawStdEncoding.EncodeToString(key.Bytes())); err != nil {
		return fmt.Errorf("failed to store the key backup key: %w", err)
	}
	created, err := e.mach.Client.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  authData,
	})
	if err != nil {
		return fmt.Errorf("failed to create key backup: %w", err)
	}
	e.backupKey, e.version = key, created.Version
	e.c.log.Info().Str("version", string(created.Version)).Msg("Created server-side key backup")
	return e.mach.SetKeyBackupVersion(ctx, created.Version)
}

// restoreIfEmpty downloads the room keys from the backup when this device holds none yet.
func (e *e2ee) restoreIfEmpty(ctx context.Context) error {
	held := false
	err := e.mach.CryptoStore.GetAllGroupSessions(ctx).Iter(func(*crypto.InboundGroupSession) (bool, error) {
		held = true
		return false, nil
	})
	if err != nil || held {
		return err
	}
	if err := e.mach.GetAndStoreKeyBackup(ctx, e.version, e.backupKey); err != nil {
		return fmt.Errorf("failed to download key backup: %w", err)
	}
	e.c.log.Info().Str("version", string(e.version)).Msg("Restored room keys from the key backup")
	return nil
}

// runBackup uploads room keys that are not in the backup yet, when woken and every minute,
// until ctx ends.
func (e *e2ee) runBackup(ctx context.Context) {
	if e.backupKey == nil || e.version == "" {
		return
	}
	ticker := time.NewTicker(backupInterval)
	defer ticker.Stop()
	for {
		if err := e.uploadBackup(ctx); err != nil && ctx.Err() == nil {
			e.c.log.Warn().Err(err).Msg("Failed to upload room keys to the key backup")
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-ticker.C:
		}
	}
}

func (e *e2ee) wakeBackup() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *e2ee) uploadBackup(ctx context.Context) error {
	sessions, err := e.mach.CryptoStore.GetGroupSessionsWithoutKeyBackupVersion(ctx, e.version).AsList()
	if err != nil {
		return fmt.Errorf("failed to list room keys: %w", err)
	}
	for len(sessions) > 0 {
		batch := sessions[:min(len(sessions), 100)]
		sessions = sessions[len(batch):]
		req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
		for _, s := range batch {
			data, err := encryptForBackup(e.backupKey, s)
			if err != nil {
				return err
			}
			room, ok := req.Rooms[s.RoomID]
			if !ok {
				room = mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
				req.Rooms[s.RoomID] = room
			}
			room.Sessions[s.ID()] = data
		}
		if _, err := e.mach.Client.PutKeysInBackup(ctx, e.version, req); err != nil {
			return fmt.Errorf("failed to upload room keys: %w", err)
		}
		for _, s := range batch {
			s.KeyBackupVersion = e.version
			if err := e.mach.CryptoStore.PutGroupSession(ctx, s); err != nil {
				return fmt.Errorf("failed to mark room key as backed up: %w", err)
			}
		}
		e.c.log.Debug().Int("count", len(batch)).Msg("Uploaded room keys to the key backup")
	}
	return nil
}

func encryptForBackup(key *backup.MegolmBackupKey, s *crypto.InboundGroupSession) (mautrix.ReqKeyBackupData, error) {
	first := s.Internal.FirstKnownIndex()
	exported, err := s.Internal.Export(first)
	if err != nil {
		return mautrix.ReqKeyBackupData{}, fmt.Errorf("failed to export room key: %w", err)
	}
	encrypted, err := backup.EncryptSessionData(key, &backup.MegolmSessionData{
		Algorithm:          id.AlgorithmMegolmV1,
		ForwardingKeyChain: s.ForwardingChains,
		SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: s.SigningKey},
		SenderKey:          s.SenderKey,
		SessionKey:         string(exported),
	})
	if err != nil {
		return mautrix.ReqKeyBackupData{}, fmt.Errorf("failed to encrypt room key: %w", err)
	}
	raw, err := json.Marshal(encrypted)
	if err != nil {
		return mautrix.ReqKeyBackupData{}, fmt.Errorf("failed to encode room key: %w", err)
	}
	return mautrix.ReqKeyBackupData{
		FirstMessageIndex: int(first),
		ForwardedCount:    len(s.ForwardingChains),
		IsVerified:        s.Internal.IsVerified(),
		SessionData:       raw,
	}, nil
}

// status reports the device's encryption state.
func (e *e2ee) status(ctx context.Context) E2EEStatus {
	s := E2EEStatus{Enabled: true, DeviceID: e.c.cli.DeviceID.String(), Status: "no_cross_signing"}
	if own := e.mach.OwnIdentity(); own != nil {
		s.IdentityKey = own.IdentityKey.String()
	}
	hasKeys, verified, err := e.mach.GetOwnVerificationStatus(ctx)
	if err == nil {
		s.CrossSigning, s.DeviceCrossSigned = hasKeys, verified
	}
	if keys, err := e.mach.GetOwnCrossSigningPublicKeys(ctx); err == nil && keys != nil {
		s.MasterKey = keys.MasterKey.String()
	}
	switch {
	case s.DeviceCrossSigned:
		s.Status = "verified"
	case s.CrossSigning:
		s.Status = "unverified"
	}
	s.KeyBackup = e.version != "" && e.backupKey != nil
	s.KeyBackupVersion = string(e.version)
	if _, err := os.Stat(filepath.Join(e.c.opts.DataDir, recoveryKeyFile)); err == nil {
		s.RecoveryKeyFile = filepath.Join(e.c.opts.DataDir, recoveryKeyFile)
	}
	return s
}

// decryptFailed reports an event that could not be decrypted, after the crypto helper waited
// and asked for its keys.
func (c *Client) decryptFailed(evt *event.Event, err error) {
	c.log.Warn().Err(err).Stringer("event_id", evt.ID).Stringer("room_id", evt.RoomID).Msg("Could not decrypt event")
	ctx := context.Background()
	c.notify(ctx, Notice{
		Type: "decryption_failed", RoomID: evt.RoomID, Sender: evt.Sender,
		Message: fmt.Sprintf("could not decrypt %s: %v", evt.ID, err),
	})
	// It fails during the sync that brought it (keys withheld), or after waiting for its keys.
	c.collectMu.Lock()
	if c.collect != nil {
		delete(c.collect.undecrypted, evt.ID)
	}
	c.collectMu.Unlock()
	if err := c.undecrypted.done(ctx, evt.ID); err != nil {
		c.log.Error().Err(err).Msg("Failed to forget an undecryptable event")
	}
}

// CheckE2EE logs in with the stored session and reports the encryption state without changing
// anything on the account, for `matrix2mqtt e2ee status`.
func (c *Client) CheckE2EE(ctx context.Context) (E2EEStatus, error) {
	if !c.cfg.E2EE.Enabled {
		return E2EEStatus{Status: "disabled"}, nil
	}
	if err := c.Login(ctx); err != nil {
		return E2EEStatus{}, err
	}
	pickleKey, err := c.pickleKey()
	if err != nil {
		return E2EEStatus{}, err
	}
	helper, err := cryptohelper.NewCryptoHelper(c.cli, pickleKey, c.rootDB)
	if err != nil {
		return E2EEStatus{}, fmt.Errorf("failed to create crypto helper: %w", err)
	}
	if err := helper.Init(ctx); err != nil {
		return E2EEStatus{}, fmt.Errorf("failed to load the crypto store: %w", err)
	}
	e := &e2ee{c: c, helper: helper, mach: helper.Machine()}
	if secret, err := e.mach.CryptoStore.GetSecret(ctx, id.SecretMegolmBackupV1); err == nil && secret != "" {
		if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(secret, "=")); err == nil {
			e.backupKey, _ = backup.MegolmBackupKeyFromBytes(raw)
		}
	}
	if latest, err := c.cli.GetKeyBackupLatestVersion(ctx); err == nil && e.backupKey != nil && latest.AuthData.PublicKey == backupPublicKey(e.backupKey) {
		e.version = latest.Version
	}
	return e.status(ctx), nil
}
