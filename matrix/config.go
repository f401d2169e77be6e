package matrix

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/e2ee"
)

// Config is the bot account and how it syncs, read from the environment.
type Config struct {
	Homeserver  string        `env:"MATRIX_HOMESERVER"`
	UserID      id.UserID     `env:"MATRIX_USER_ID"`
	Password    string        `env:"MATRIX_PASSWORD"`
	AccessToken string        `env:"MATRIX_ACCESS_TOKEN"`
	DeviceName  string        `env:"MATRIX_DEVICE_NAME" envDefault:"matrix2mqtt"`
	SyncTimeout time.Duration `env:"MATRIX_SYNC_TIMEOUT" envDefault:"30s"`
	// AutoJoin lists the users (@user:server) and servers (:server, or * for anyone) whose
	// invites the bot accepts.
	AutoJoin []string `env:"AUTO_JOIN"`

	E2EE e2ee.Config
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	u, err := url.Parse(c.Homeserver)
	switch {
	case c.Homeserver == "":
		return errors.New("MATRIX_HOMESERVER: required (e.g. https://matrix.example.org)")
	case err != nil:
		return fmt.Errorf("MATRIX_HOMESERVER: %w", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("MATRIX_HOMESERVER: %q is not an http(s) URL", c.Homeserver)
	}
	if c.UserID == "" {
		return errors.New("MATRIX_USER_ID: required (e.g. @bot:example.org)")
	}
	if _, _, err := c.UserID.ParseAndValidateRelaxed(); err != nil {
		return fmt.Errorf("MATRIX_USER_ID: %q is not a valid user ID: %w", c.UserID, err)
	}
	if c.Password == "" && c.AccessToken == "" {
		return errors.New("MATRIX_PASSWORD or MATRIX_ACCESS_TOKEN: one is required")
	}
	if c.SyncTimeout < time.Second || c.SyncTimeout > 5*time.Minute {
		return errors.New("MATRIX_SYNC_TIMEOUT: must be between 1s and 5m")
	}
	if err := c.E2EE.Validate(); err != nil {
		return err
	}
	for _, entry := range c.AutoJoin {
		if entry == "*" {
			continue
		}
		if len(entry) < 2 || (entry[0] != '@' && entry[0] != ':') {
			return fmt.Errorf("AUTO_JOIN: %q is neither @user:server, :server nor *", entry)
		}
		if entry[0] == '@' {
			if _, _, err := id.UserID(entry).ParseAndValidateRelaxed(); err != nil {
				return fmt.Errorf("AUTO_JOIN: %q: %w", entry, err)
			}
		}
	}
	return nil
}

// acceptsInviteFrom reports whether AUTO_JOIN lets the bot accept an invite from sender.
func (c Config) acceptsInviteFrom(sender id.UserID) bool {
	for _, entry := range c.AutoJoin {
		switch {
		case entry == "*", entry == string(sender):
			return true
		case entry[0] == ':' && sender.Homeserver() == entry[1:]:
			return true
		}
	}
	return false
}
