package e2ee

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/ssss"
)

// recoveryKey is the configured recovery key, or the one this bridge wrote when it made the
// cross-signing keys.
func (c *Crypto) recoveryKey() string {
	if c.cfg.RecoveryKey != "" {
		return strings.TrimSpace(c.cfg.RecoveryKey)
	}
	data, err := os.ReadFile(filepath.Join(c.opts.DataDir, recoveryKeyFile))
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

// ErrIdentityLocked means the account has cross-signing keys that this device cannot unlock
// (no recovery key): the bridge does not replace them on its own, and runs without E2EE.
var ErrIdentityLocked = errors.New("the account already has cross-signing keys and E2EE_RECOVERY_KEY is not set")

// setUpCrossSigning makes sure the bot's device is signed by its owner's self-signing key. It
// never replaces existing cross-signing keys unless E2EE_RESET_IDENTITY is set: Element warns
// everyone who verified the bot when its identity changes.
func (c *Crypto) setUpCrossSigning(ctx context.Context) error {
	hasKeys, verified, err := c.mach.GetOwnVerificationStatus(ctx)
	if err != nil {
		return fmt.Errorf("failed to check cross-signing status: %w", err)
	}
	switch {
	case verified:
		return nil
	case !hasKeys && c.opts.Password != "":
		return c.bootstrapCrossSigning(ctx)
	case !hasKeys:
		c.log.Warn().Msg("No cross-signing keys exist and without MATRIX_PASSWORD they cannot be made; the bot's device stays unverified")
		c.opts.Notify(ctx, "cross_signing_missing", "set MATRIX_PASSWORD (once) so that the bridge can create cross-signing keys, or create them in Element and set E2EE_RECOVERY_KEY")
		return nil
	}
	recoveryKey := c.recoveryKey()
	if recoveryKey == "" {
		if c.cfg.ResetIdentity && c.opts.Password != "" {
			c.log.Warn().Msg("E2EE_RESET_IDENTITY is set: replacing the account's cross-signing keys; everyone who verified the bot will see its identity change")
			return c.bootstrapCrossSigning(ctx)
		}
		return fmt.Errorf("%w: set E2EE_RECOVERY_KEY (or E2EE_RECOVERY_KEY_FILE) to the recovery key of %s "+
			"(DATA_DIR/recovery-key.txt of its first data dir, or the one Element showed) and restart; "+
			"only if it is lost for good, set E2EE_RESET_IDENTITY=true with MATRIX_PASSWORD for one start to make new keys "+
			"(everyone who verified the bot sees its identity change). Until then encrypted rooms are refused", ErrIdentityLocked, c.opts.Client.UserID)
	}
	if err := c.mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
		return fmt.Errorf("failed to unlock cross-signing with E2EE_RECOVERY_KEY: %w", err)
	}
	c.log.Info().Msg("Signed the bot's device with the cross-signing keys unlocked by the recovery key")
	return nil
}

// bootstrapCrossSigning makes master, self-signing and user-signing keys, keeps them in secret
// storage under a new recovery key, and signs this device. The recovery key is written to its
// file (0600, atomically) before anything is uploaded: a key that reached the server but not the
// disk would be lost.
func (c *Crypto) bootstrapCrossSigning(ctx context.Context) error {
	key, err := ssss.NewKey("")
	if err != nil {
		return fmt.Errorf("failed to generate the recovery key: %w", err)
	}
	path := filepath.Join(c.opts.DataDir, recoveryKeyFile)
	content := "# matrix2mqtt recovery key for " + c.opts.Client.UserID.String() + ": keep a copy outside DATA_DIR.\n" +
		"# It restores the bot's cross-signing and key backup (E2EE_RECOVERY_KEY) if DATA_DIR is lost.\n" + key.RecoveryKey() + "\n"
	if err := writeFileAtomic(path, []byte(content)); err != nil {
		return fmt.Errorf("failed to save the recovery key before creating cross-signing keys: %w", err)
	}
	if err := c.uploadCrossSigning(ctx, key); err != nil {
		return err
	}
	if err := c.mach.SignOwnDevice(ctx, c.mach.OwnIdentity()); err != nil {
		return fmt.Errorf("failed to sign own device: %w", err)
	}
	if err := c.mach.SignOwnMasterKey(ctx); err != nil {
		return fmt.Errorf("failed to sign own master key: %w", err)
	}
	c.log.Warn().Str("path", path).
		Msg("Created cross-signing keys for the bot; its recovery key is in this file: copy it somewhere safe, it restores the bot's identity and message keys if DATA_DIR is lost")
	return nil
}

// uploadCrossSigning does what mautrix's GenerateAndUploadCrossSigningKeys does, with a
// recovery key made (and saved) beforehand: the secret storage key, the cross-signing keys
// encrypted with it, the public keys (authorised with MATRIX_PASSWORD), the default key.
func (c *Crypto) uploadCrossSigning(ctx context.Context, key *ssss.Key) error {
	if err := c.mach.SSSS.SetKeyData(ctx, key.ID, key.Metadata); err != nil {
		return fmt.Errorf("failed to upload the secret storage key: %w", err)
	}
	keys, err := c.mach.GenerateCrossSigningKeys()
	if err != nil {
		return fmt.Errorf("failed to create cross-signing keys: %w", err)
	}
	if err := c.mach.UploadCrossSigningKeysToSSSS(ctx, key, keys); err != nil {
		return fmt.Errorf("failed to upload cross-signing keys to secret storage: %w", err)
	}
	password := c.opts.Password
	userID := c.opts.Client.UserID.String()
	err = c.mach.PublishCrossSigningKeys(ctx, keys, func(ui *mautrix.RespUserInteractive) any {
		return &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: ui.Session},
			User:         userID,
			Password:     password,
		}
	})
	if err != nil {
		return fmt.Errorf("failed to publish cross-signing keys: %w", err)
	}
	if err := c.mach.SSSS.SetDefaultKeyID(ctx, key.ID); err != nil {
		return fmt.Errorf("failed to mark the secret storage key as default: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path with mode 0600: to a temporary file beside it, synced,
// then renamed over path, so that path holds either nothing or all of data.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("failed to create a temporary file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("failed to restrict %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("failed to sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to rename %s: %w", tmp, err)
	}
	return nil
}
