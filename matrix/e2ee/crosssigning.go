package e2ee

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// setUpCrossSigning makes sure the bot's device is signed by its owner's self-signing key.
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
		c.log.Warn().Msg("Cross-signing keys exist but E2EE_RECOVERY_KEY is not set; the bot's device stays unverified")
		c.opts.Notify(ctx, "cross_signing_locked", "cross-signing keys exist on the account: set E2EE_RECOVERY_KEY so that the bridge can sign its device")
		return nil
	}
	if err := c.mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
		return fmt.Errorf("failed to unlock cross-signing with E2EE_RECOVERY_KEY: %w", err)
	}
	c.log.Info().Msg("Signed the bot's device with the cross-signing keys unlocked by the recovery key")
	return nil
}

// bootstrapCrossSigning makes master, self-signing and user-signing keys, keeps them in secret
// storage under a new recovery key, signs this device, and writes the recovery key to a file.
func (c *Crypto) bootstrapCrossSigning(ctx context.Context) error {
	recoveryKey, _, err := c.mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, c.opts.Password, "")
	if err != nil {
		return fmt.Errorf("failed to create cross-signing keys: %w", err)
	}
	path := filepath.Join(c.opts.DataDir, recoveryKeyFile)
	content := "# matrix2mqtt recovery key for " + c.opts.Client.UserID.String() + ": keep a copy outside DATA_DIR.\n" +
		"# It restores the bot's cross-signing and key backup (E2EE_RECOVERY_KEY) if DATA_DIR is lost.\n" + recoveryKey + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("failed to save the recovery key: %w", err)
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
