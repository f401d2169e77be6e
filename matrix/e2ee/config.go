package e2ee

import "fmt"

// Config is the end-to-end encryption section of the config.
type Config struct {
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
	// ResetIdentity lets a start without the recovery key replace the account's existing
	// cross-signing keys with new ones (needs MATRIX_PASSWORD). Off: such a start leaves E2EE
	// broken instead, so that the bot's identity never changes on its own.
	ResetIdentity bool `env:"E2EE_RESET_IDENTITY" envDefault:"false"`
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch c.ShareKeysWith {
	case "all", "cross-signed":
	default:
		return fmt.Errorf("E2EE_SHARE_KEYS_WITH: %q is not all or cross-signed", c.ShareKeysWith)
	}
	return nil
}
