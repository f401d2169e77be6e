package bridge

import (
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
)

// masked stands for a secret value in printed configuration.
const masked = "********"

// secretSetting matches the settings whose whole value is a secret (MQTT_KEY is the PEM of the
// client certificate's private key, also when read from MQTT_KEY_FILE).
var secretSetting = regexp.MustCompile(`PASSWORD|TOKEN|SECRET|PICKLE_KEY|RECOVERY_KEY|^MQTT_KEY$`)

// urlSettings are the settings that are URLs, which may hold a password (user:pass@host or a
// password query parameter).
var urlSettings = map[string]bool{"MQTT_URL": true, "DATABASE_URL": true, "MATRIX_HOMESERVER": true}

// PrintConfig checks the configuration of environ and writes the effective settings, one
// NAME=value line each in the order of configs/example.env's sections, with every secret
// masked: the `check-config` subcommand.
func PrintConfig(w io.Writer, environ []string) error {
	if _, err := LoadConfig(environ); err != nil {
		return err
	}
	vars, params, err := settings(environ)
	if err != nil {
		return err
	}
	fromFile := map[string]bool{}
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); strings.HasSuffix(k, "_FILE") {
			fromFile[strings.TrimSuffix(k, "_FILE")] = true
		}
	}
	fmt.Fprintln(w, "# matrix2mqtt: configuration is valid. Effective settings (secrets masked):")
	for _, p := range params {
		value, set := vars[p.Key]
		if !set {
			value = p.DefaultValue
		}
		line := p.Key + "=" + MaskSetting(p.Key, value)
		switch {
		case fromFile[p.Key]:
			line += "  # from " + p.Key + "_FILE"
		case !set && value != "":
			line += "  # default"
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return fmt.Errorf("failed to print the configuration: %w", err)
		}
	}
	return nil
}

// MaskSetting returns value as it may be shown: a secret setting's value masked, and the
// credentials inside a URL setting masked.
func MaskSetting(key, value string) string {
	switch {
	case value == "":
		return ""
	case secretSetting.MatchString(key):
		return masked
	case urlSettings[key]:
		return MaskURL(value)
	case key == "MEDIA_HEADERS":
		return maskHeaders(value)
	}
	return value
}

// maskHeaders masks the values in MEDIA_HEADERS (host=Name: value, comma-separated), which are
// usually tokens, and keeps the hosts and header names; an entry of another shape is masked
// whole.
func maskHeaders(value string) string {
	entries := strings.Split(value, ",")
	for i, entry := range entries {
		host, header, ok := strings.Cut(entry, "=")
		name, _, ok2 := strings.Cut(header, ":")
		if !ok || !ok2 {
			entries[i] = masked
			continue
		}
		entries[i] = host + "=" + name + ": " + masked
	}
	return strings.Join(entries, ",")
}

// MaskURL masks the password of a URL's user info and the values of query parameters that
// name a password, key or token. A value that does not parse as a URL is masked whole.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return masked
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), masked)
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if lk := strings.ToLower(k); strings.Contains(lk, "pass") || strings.Contains(lk, "key") ||
				strings.Contains(lk, "token") || strings.Contains(lk, "secret") {
				q[k] = []string{masked}
			}
		}
		u.RawQuery = q.Encode()
	}
	// The mask stays readable rather than percent-encoded.
	return strings.ReplaceAll(u.String(), url.QueryEscape(masked), masked)
}
