package testenv

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// dendriteBinaries are the programs that scripts/build-dendrite.sh puts in BinDir.
var dendriteBinaries = []string{"dendrite", "generate-config", "generate-keys", "create-account"}

// checkDendriteBinaries reports a missing Dendrite binary.
func checkDendriteBinaries() error {
	for _, name := range dendriteBinaries {
		if _, err := os.Stat(filepath.Join(BinDir(), name)); err != nil {
			return fmt.Errorf("failed to find the Dendrite binaries (run scripts/install-deps.sh): %w", err)
		}
	}
	return nil
}

// dendriteConfig is Dendrite's configuration file; options not set here take Dendrite's
// defaults. Like generate-config, it gives each component its own SQLite file.
var dendriteConfig = template.Must(template.New("dendrite.yaml").
	Funcs(template.FuncMap{"quote": quote}).
	Parse(`version: 2
global:
  server_name: {{quote .ServerName}}
  private_key: {{quote (.Path "matrix_key.pem")}}
  disable_federation: true
  trusted_third_party_id_servers: []
  server_notices:
    enabled: false
  report_stats:
    enabled: false
  cache:
    max_size_estimated: 64mb
  # On disk, as in a real install: with in_memory, a restart drops the events that the
  # sync API had not consumed yet, and they never reach /sync.
  jetstream:
    in_memory: false
    storage_path: {{quote (.Path "jetstream")}}
client_api:
  registration_disabled: true
  registration_shared_secret: {{quote .SharedSecret}}
  guests_disabled: true
  rate_limiting:
    enabled: {{.RateLimit}}
    threshold: 5
    cooloff_ms: 500
federation_api:
  database:
    connection_string: {{quote (.DB "federationapi")}}
  key_perspectives: []
key_server:
  database:
    connection_string: {{quote (.DB "keyserver")}}
media_api:
  database:
    connection_string: {{quote (.DB "mediaapi")}}
  base_path: {{quote (.Path "media")}}
mscs:
  database:
    connection_string: {{quote (.DB "mscs")}}
relay_api:
  database:
    connection_string: {{quote (.DB "relayapi")}}
room_server:
  database:
    connection_string: {{quote (.DB "roomserver")}}
sync_api:
  database:
    connection_string: {{quote (.DB "syncapi")}}
  search:
    enabled: false
user_api:
  bcrypt_cost: 4
  account_database:
    connection_string: {{quote (.DB "userapi")}}
logging:
  - type: std
    level: info
`))

// dendriteConfigData fills dendriteConfig.
type dendriteConfigData struct {
	Dir          string
	ServerName   string
	SharedSecret string
	RateLimit    bool
}

// Path returns the path of a file in the Dendrite directory.
func (d dendriteConfigData) Path(name string) string { return filepath.Join(d.Dir, name) }

// DB returns the connection string of a component's SQLite database.
func (d dendriteConfigData) DB(component string) string {
	return "file:" + d.Path(component+".db")
}

// quote returns s as a double-quoted YAML scalar (JSON strings are valid YAML).
func quote(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

func (e *Env) dendriteDir() string { return filepath.Join(e.Dir, "dendrite") }

// setupDendrite creates the homeserver's signing key and configuration file.
func (e *Env) setupDendrite(ctx context.Context) error {
	dir := e.dendriteDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create the dendrite directory: %w", err)
	}
	e.sharedSecret = rand.Text()
	out, err := exec.CommandContext(ctx, filepath.Join(BinDir(), "generate-keys"),
		"--private-key", filepath.Join(dir, "matrix_key.pem")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("failed to generate the dendrite signing key: %w: %s", err, out)
	}
	var conf bytes.Buffer
	err = dendriteConfig.Execute(&conf, dendriteConfigData{
		Dir:          dir,
		ServerName:   e.ServerName,
		SharedSecret: e.sharedSecret,
		RateLimit:    e.opts.DendriteRateLimit,
	})
	if err != nil {
		return fmt.Errorf("failed to render the dendrite config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), conf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("failed to write the dendrite config: %w", err)
	}
	return nil
}

// StartDendrite starts the homeserver again after StopDendrite, on the same port and with
// the same data, and waits until it answers /_matrix/client/versions.
func (e *Env) StartDendrite(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	if e.dendrite != nil {
		return fmt.Errorf("failed to start dendrite: it is already running")
	}
	u, err := url.Parse(e.HomeserverURL)
	if err != nil {
		return fmt.Errorf("failed to parse the homeserver URL: %w", err)
	}
	ready := func(ctx context.Context) error {
		_, err := e.do(ctx, http.MethodGet, "/_matrix/client/versions", nil)
		return err
	}
	p, err := startProcess(ctx, ready, "dendrite", filepath.Join(e.logDir, "dendrite.log"),
		e.dendriteDir(), filepath.Join(BinDir(), "dendrite"),
		"-config", filepath.Join(e.dendriteDir(), "dendrite.yaml"),
		"-http-bind-address", u.Host)
	if err != nil {
		return err
	}
	e.dendrite = p
	return nil
}

// StopDendrite stops the homeserver; its data stays for StartDendrite. It does nothing if
// the homeserver is not running.
func (e *Env) StopDendrite() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dendrite == nil {
		return nil
	}
	p := e.dendrite
	e.dendrite = nil
	return p.stop()
}

// User is a Matrix account registered by RegisterUser.
type User struct {
	UserID   string
	Password string
	// AccessToken and DeviceID belong to the device that registration created; Dendrite
	// names it "shared_secret_registration" for every user. Clients that need a device
	// of their own (E2EE) log in again with Password.
	AccessToken string
	DeviceID    string
}

// RegisterUser creates an account with a random password through the shared-secret
// registration endpoint (/_synapse/admin/v1/register).
func (e *Env) RegisterUser(ctx context.Context, localpart string) (*User, error) {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	body, err := e.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", nil)
	if err != nil {
		return nil, fmt.Errorf("failed to get a registration nonce: %w", err)
	}
	if err := json.Unmarshal(body, &nonce); err != nil {
		return nil, fmt.Errorf("failed to decode the registration nonce: %w", err)
	}

	password := rand.Text()
	mac := hmac.New(sha1.New, []byte(e.sharedSecret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, localpart, password, "notadmin"}, "\x00")))
	req, err := json.Marshal(map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    false,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to encode the registration request: %w", err)
	}
	body, err = e.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", req)
	if err != nil {
		return nil, fmt.Errorf("failed to register %q: %w", localpart, err)
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("failed to decode the registration response: %w", err)
	}
	return &User{
		UserID:      resp.UserID,
		Password:    password,
		AccessToken: resp.AccessToken,
		DeviceID:    resp.DeviceID,
	}, nil
}

// httpClient talks to the homeserver; the timeout bounds each request when the caller's
// context does not.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// do sends a request with an optional JSON body to the homeserver and returns the
// response body, or an error for a status other than 200.
func (e *Env) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.HomeserverURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("failed to read the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, data)
	}
	return data, nil
}
