package e2ee

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/crypto/ssss"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// backupInterval is how often room keys not yet in the key backup are uploaded, besides after
// every sync that brought some.
const backupInterval = time.Minute

// loadBackupKey reads the key backup key from the crypto store, if it holds one.
func (c *Crypto) loadBackupKey(ctx context.Context) {
	if secret, err := c.mach.CryptoStore.GetSecret(ctx, id.SecretMegolmBackupV1); err == nil && secret != "" {
		if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(secret, "=")); err == nil {
			c.backupKey, _ = backup.MegolmBackupKeyFromBytes(raw)
		}
	}
}

// setUpBackup finds the key backup to upload room keys to, creating one on first start, and
// restores room keys from it when this device has none (a new data dir).
func (c *Crypto) setUpBackup(ctx context.Context) error {
	c.loadBackupKey(ctx)
	var ssssKey *ssss.Key
	if c.backupKey == nil {
		key, err := c.unlockSSSS(ctx)
		if err != nil {
			return err
		}
		ssssKey = key
		if raw, err := c.mach.SSSS.GetDecryptedAccountData(ctx, event.AccountDataMegolmBackupKey, key); err == nil {
			if c.backupKey, err = backup.MegolmBackupKeyFromBytes(raw); err != nil {
				return fmt.Errorf("failed to read the key backup key from secret storage: %w", err)
			}
			if err := c.mach.CryptoStore.PutSecret(ctx, id.SecretMegolmBackupV1, base64.RawStdEncoding.EncodeToString(raw)); err != nil {
				return fmt.Errorf("failed to store the key backup key: %w", err)
			}
		}
	}
	latest, err := c.mach.Client.GetKeyBackupLatestVersion(ctx)
	switch {
	case errors.Is(err, mautrix.MNotFound):
		latest = nil
	case err != nil:
		return fmt.Errorf("failed to get the key backup version: %w", err)
	}
	if latest != nil && c.backupKey != nil && latest.AuthData.PublicKey == backupPublicKey(c.backupKey) {
		c.version = latest.Version
		if err := c.restoreIfEmpty(ctx); err != nil {
			c.log.Warn().Err(err).Msg("Failed to restore room keys from the key backup")
		}
		return c.mach.SetKeyBackupVersion(ctx, c.version)
	}
	if latest != nil {
		return errors.New("the account has a key backup whose key the bridge does not have: set E2EE_RECOVERY_KEY")
	}
	if ssssKey == nil || c.mach.CrossSigningKeys == nil {
		return errors.New("no key backup exists, and the bridge can make one only while it holds the cross-signing keys (first start, or with E2EE_RECOVERY_KEY)")
	}
	return c.createBackup(ctx, ssssKey)
}

// unlockSSSS returns the default secret storage key, unlocked with the recovery key.
func (c *Crypto) unlockSSSS(ctx context.Context) (*ssss.Key, error) {
	recoveryKey := c.recoveryKey()
	if recoveryKey == "" {
		return nil, errors.New("no recovery key to unlock secret storage with")
	}
	keyID, keyData, err := c.mach.SSSS.GetDefaultKeyData(ctx)
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
func (c *Crypto) createBackup(ctx context.Context, ssssKey *ssss.Key) error {
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		return fmt.Errorf("failed to generate key backup key: %w", err)
	}
	authData := backup.MegolmAuthData{PublicKey: backupPublicKey(key)}
	master := c.mach.CrossSigningKeys.MasterKey
	sig, err := master.SignJSON(&authData)
	if err != nil {
		return fmt.Errorf("failed to sign key backup: %w", err)
	}
	authData.Signatures = signatures.NewSingleSignature(c.opts.Client.UserID, id.KeyAlgorithmEd25519, master.PublicKey().String(), sig)
	if err := c.mach.SSSS.SetEncryptedAccountData(ctx, event.AccountDataMegolmBackupKey, key.Bytes(), ssssKey); err != nil {
		return fmt.Errorf("failed to keep the key backup key in secret storage: %w", err)
	}
	if err := c.mach.CryptoStore.PutSecret(ctx, id.SecretMegolmBackupV1, base64.RawStdEncoding.EncodeToString(key.Bytes())); err != nil {
		return fmt.Errorf("failed to store the key backup key: %w", err)
	}
	created, err := c.mach.Client.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  authData,
	})
	if err != nil {
		return fmt.Errorf("failed to create key backup: %w", err)
	}
	c.backupKey, c.version = key, created.Version
	c.log.Info().Str("version", string(created.Version)).Msg("Created server-side key backup")
	return c.mach.SetKeyBackupVersion(ctx, created.Version)
}

// restoreIfEmpty downloads the room keys from the backup when this device holds none yet.
func (c *Crypto) restoreIfEmpty(ctx context.Context) error {
	held := false
	err := c.mach.CryptoStore.GetAllGroupSessions(ctx).Iter(func(*crypto.InboundGroupSession) (bool, error) {
		held = true
		return false, nil
	})
	if err != nil || held {
		return err
	}
	if err := c.mach.GetAndStoreKeyBackup(ctx, c.version, c.backupKey); err != nil {
		return fmt.Errorf("failed to download key backup: %w", err)
	}
	c.log.Info().Str("version", string(c.version)).Msg("Restored room keys from the key backup")
	return nil
}

// RunBackup uploads room keys that are not in the key backup yet, when woken and every minute,
// until ctx ends. Without a key backup it returns at once.
func (c *Crypto) RunBackup(ctx context.Context) {
	if c.backupKey == nil || c.version == "" {
		return
	}
	ticker := time.NewTicker(backupInterval)
	defer ticker.Stop()
	for {
		if err := c.uploadBackup(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("Failed to upload room keys to the key backup")
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-ticker.C:
		}
	}
}

// WakeBackup asks RunBackup to upload new room keys now, as after a sync that may have brought
// some.
func (c *Crypto) WakeBackup() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Crypto) uploadBackup(ctx context.Context) error {
	sessions, err := c.mach.CryptoStore.GetGroupSessionsWithoutKeyBackupVersion(ctx, c.version).AsList()
	if err != nil {
		return fmt.Errorf("failed to list room keys: %w", err)
	}
	for len(sessions) > 0 {
		batch := sessions[:min(len(sessions), 100)]
		sessions = sessions[len(batch):]
		req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
		for _, s := range batch {
			data, err := encryptForBackup(c.backupKey, s)
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
		if _, err := c.mach.Client.PutKeysInBackup(ctx, c.version, req); err != nil {
			return fmt.Errorf("failed to upload room keys: %w", err)
		}
		for _, s := range batch {
			s.KeyBackupVersion = c.version
			if err := c.mach.CryptoStore.PutGroupSession(ctx, s); err != nil {
				return fmt.Errorf("failed to mark room key as backed up: %w", err)
			}
		}
		c.log.Debug().Int("count", len(batch)).Msg("Uploaded room keys to the key backup")
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
