// Package mqtt wraps paho.mqtt.golang for the bridge: a persistent session with a last will,
// resubscription on every reconnect, manual acknowledgement of received QoS 1 messages, and
// publishes that are bounded in flight and always waited for with a context.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

// Config is the broker connection, read from the environment.
type Config struct {
	URL         string        `env:"MQTT_URL" envDefault:"tcp://127.0.0.1:1883"`
	Username    string        `env:"MQTT_USERNAME"`
	Password    string        `env:"MQTT_PASSWORD"`
	ClientID    string        `env:"MQTT_CLIENT_ID" envDefault:"matrix2mqtt"`
	BaseTopic   string        `env:"MQTT_BASE_TOPIC" envDefault:"matrix2mqtt"`
	KeepAlive   time.Duration `env:"MQTT_KEEPALIVE" envDefault:"30s"`
	MaxInflight int           `env:"MQTT_MAX_INFLIGHT" envDefault:"64"`
	// CA, Cert and Key are PEM, usually given as files (MQTT_CA_FILE…): a CA that signed the
	// broker's certificate, trusted besides the system's, and a client certificate with its key.
	CA   string `env:"MQTT_CA"`
	Cert string `env:"MQTT_CERT"`
	Key  string `env:"MQTT_KEY"`
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error repeats the whole URL, credentials included: keep only its reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("MQTT_URL: %s is not a URL: %w", RedactURL(c.URL), err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("MQTT_URL: scheme %q is not one of tcp, ssl, ws, wss", u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("MQTT_URL: %q has no host", RedactURL(c.URL))
	}
	if c.ClientID == "" {
		return errors.New("MQTT_CLIENT_ID: must not be empty")
	}
	if len(c.ClientID) > 65535 {
		return errors.New("MQTT_CLIENT_ID: too long")
	}
	if err := validateBase(c.BaseTopic); err != nil {
		return fmt.Errorf("MQTT_BASE_TOPIC: %w", err)
	}
	if c.KeepAlive < time.Second {
		return errors.New("MQTT_KEEPALIVE: must be at least 1s")
	}
	if c.MaxInflight < 1 {
		return errors.New("MQTT_MAX_INFLIGHT: must be at least 1")
	}
	if c.CA != "" || c.Cert != "" || c.Key != "" {
		if !slices.Contains([]string{"ssl", "tls", "mqtts", "wss"}, u.Scheme) {
			return fmt.Errorf("MQTT_CA, MQTT_CERT and MQTT_KEY need a TLS broker URL (ssl://, mqtts://, wss://), not %s://", u.Scheme)
		}
	}
	_, err = c.TLSConfig()
	return err
}

// TLSConfig returns the TLS settings made of CA, Cert and Key, or nil when none is set (paho
// then uses the system's CAs for ssl:// and wss://).
func (c Config) TLSConfig() (*tls.Config, error) {
	if c.CA == "" && c.Cert == "" && c.Key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(c.CA)) {
			return nil, errors.New("MQTT_CA: no PEM certificate in it")
		}
		cfg.RootCAs = pool
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("MQTT_CERT and MQTT_KEY: set both or neither")
	}
	if c.Cert != "" {
		pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
		if err != nil {
			return nil, fmt.Errorf("MQTT_CERT and MQTT_KEY: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func validateBase(base string) error {
	if base == "" {
		return errors.New("must not be empty")
	}
	for _, seg := range strings.Split(base, "/") {
		if err := ValidateSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// Message is one message received from the broker. A QoS 1 message is acknowledged to the
// broker only when Ack is called; until then the broker redelivers it after a reconnect.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	// Duplicate is set on a redelivery: the broker sent this message before, and it was not
	// acknowledged then. PacketID is the same on both deliveries.
	Duplicate bool
	PacketID  uint16
	ack       func()
}

// NewMessage makes a QoS 1 message whose Ack calls ack: for unit tests of message handlers.
func NewMessage(topic string, payload []byte, ack func()) Message {
	return Message{Topic: topic, Payload: payload, QoS: 1, ack: ack}
}

// Ack acknowledges the message to the broker (PUBACK for QoS 1).
func (m Message) Ack() {
	if m.ack != nil {
		m.ack()
	}
}

// Will is the last-will message the broker publishes when the connection is lost.
type Will struct {
	Topic   string
	Payload string
}

// Options are the bridge's hooks into the connection.
type Options struct {
	Will Will
	// OnConnect runs in its own goroutine after each (re)connect and resubscription.
	OnConnect func(ctx context.Context)
	// OnConnectionLost is called when the connection drops; it must not block.
	OnConnectionLost func(error)
}

// Client is a connection to the broker.
type Client struct {
	cfg      Config
	opts     Options
	paho     paho.Client
	inflight chan struct{}
	log      zerolog.Logger
	ctx      context.Context
	// connected is closed when the first Connect completed, paho's resend of its stored
	// messages included.
	connected chan struct{}
	gate      *sendGate

	failureMu     sync.Mutex
	lastFailure   string
	lastFailureAt time.Time

	routesMu sync.RWMutex
	routes   []route
}

// route hands the messages whose topic matches filter to handle; listen routes are subscribed
// on every (re)connect.
type route struct {
	filter string
	handle func(Message)
	listen bool
}

// New prepares a client; Connect starts it. ctx carries the logger and bounds the callbacks.
func New(ctx context.Context, cfg Config, opts Options) (*Client, error) {
	tlsConfig, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		opts:     opts,
		inflight: make(chan struct{}, cfg.MaxInflight),
		log:      zerolog.Ctx(ctx).With().Str("component", "mqtt").Logger(),
		ctx:      ctx,

		connected: make(chan struct{}),
		gate:      newSendGate(),
	}
	po := paho.NewClientOptions().
		SetStore(resumeStore{Store: paho.NewMemoryStore(), listed: c.gate.open}).
		AddBroker(brokerURL(cfg.URL)).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(false).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetResumeSubs(true).
		SetDefaultPublishHandler(c.handle).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.log.Warn().Err(err).Msg("MQTT connection lost")
			if opts.OnConnectionLost != nil {
				opts.OnConnectionLost(err)
			}
		}).
		SetReconnectingHandler(func(_ paho.Client, _ *paho.ClientOptions) {
			c.gate.close()
			c.log.Debug().Msg("Reconnecting to MQTT broker")
		}).
		SetConnectionNotificationHandler(c.logConnectFailure)
	if opts.Will.Topic != "" {
		po.SetWill(opts.Will.Topic, opts.Will.Payload, 1, true)
	}
	if tlsConfig != nil {
		po.SetTLSConfig(tlsConfig)
	}
	c.paho = paho.NewClient(po)
	return c, nil
}

// logConnectFailure logs why a connection attempt failed (a refused connection, a certificate
// the CA settings do not cover, a wrong password…), which paho's retries would otherwise hide.
// The same reason is logged again at most once a minute.
func (c *Client) logConnectFailure(_ paho.Client, n paho.ConnectionNotification) {
	failed, ok := n.(paho.ConnectionNotificationFailed)
	if !ok || failed.Reason == nil {
		return
	}
	c.failureMu.Lock()
	defer c.failureMu.Unlock()
	reason := failed.Reason.Error()
	if reason == c.lastFailure && time.Since(c.lastFailureAt) < time.Minute {
		return
	}
	c.lastFailure, c.lastFailureAt = reason, time.Now()
	c.log.Warn().Err(redactErr(failed.Reason, c.cfg.URL)).Str("broker", RedactURL(c.cfg.URL)).Msg("Failed to connect to MQTT broker; retrying")
}

// RedactURL returns raw with the user and password it may hold (`tcp://user:pass@host`) masked,
// for logs and errors. Something that does not parse as a URL is masked whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// redactedError is an error whose text has the credentials of a URL masked.
type redactedError struct {
	err     error
	secrets []string
}

func (e redactedError) Error() string {
	msg := e.err.Error()
	for _, s := range e.secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

func (e redactedError) Unwrap() error { return e.err }

// redactErr masks in err's text the user and password of raw, which a dial error may repeat.
func redactErr(err error, raw string) error {
	u, perr := url.Parse(raw)
	if err == nil || perr != nil || u.User == nil {
		return err
	}
	secrets := []string{u.User.String()}
	if p, ok := u.User.Password(); ok && p != "" {
		secrets = append(secrets, p)
	}
	return redactedError{err: err, secrets: secrets}
}

// brokerURL maps the scheme aliases users write to the ones paho knows.
func brokerURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	switch u.Scheme {
	case "mqtt":
		u.Scheme = "tcp"
	case "mqtts", "tls":
		u.Scheme = "ssl"
	}
	return u.String()
}

// Listen subscribes to filter with QoS 1 on every (re)connect and hands its messages to handle,
// which must hand them over and return at once. Call it before Connect; the first matching
// route of a message takes it.
func (c *Client) Listen(filter string, handle func(Message)) {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	c.routes = append(c.routes, route{filter: filter, handle: handle, listen: true})
}

// handle routes a message; one that no route takes (a copy from a subscription that a crash
// left behind) is acknowledged and dropped.
func (c *Client) handle(_ paho.Client, pm paho.Message) {
	m := Message{
		Topic: pm.Topic(), Payload: pm.Payload(), QoS: pm.Qos(), Retained: pm.Retained(),
		Duplicate: pm.Duplicate(), PacketID: pm.MessageID(), ack: pm.Ack,
	}
	c.routesMu.RLock()
	defer c.routesMu.RUnlock()
	for _, r := range c.routes {
		if Match(r.filter, m.Topic) {
			r.handle(m)
			return
		}
	}
	m.Ack()
	c.log.Debug().Str("topic", m.Topic).Msg("Dropping message no route takes")
}

// listenFilters are the filters subscribed on every connect.
func (c *Client) listenFilters() map[string]byte {
	c.routesMu.RLock()
	defer c.routesMu.RUnlock()
	filters := map[string]byte{}
	for _, r := range c.routes {
		if r.listen {
			filters[r.filter] = 1
		}
	}
	return filters
}

// onConnect subscribes without blocking paho's callback goroutine.
func (c *Client) onConnect(pc paho.Client) {
	c.log.Info().Str("broker", RedactURL(c.cfg.URL)).Msg("Connected to MQTT broker")
	go func() {
		// paho calls this before it resends the messages of its store: the announcement
		// waits for the first connect to complete (and, on a reconnect, for the send gate).
		select {
		case <-c.connected:
		case <-c.ctx.Done():
			return
		}
		if filters := c.listenFilters(); len(filters) > 0 {
			if err := wait(c.ctx, pc.SubscribeMultiple(filters, nil)); err != nil {
				c.log.Error().Err(err).Msg("Failed to subscribe")
				return
			}
		}
		if c.opts.OnConnect != nil {
			c.opts.OnConnect(c.ctx)
		}
	}()
}

// Connect starts the connection and waits until the first connect succeeds or ctx ends;
// after that paho reconnects on its own.
func (c *Client) Connect(ctx context.Context) error {
	if err := wait(ctx, c.paho.Connect()); err != nil {
		return fmt.Errorf("failed to connect to MQTT broker %s: %w", RedactURL(c.cfg.URL), redactErr(err, c.cfg.URL))
	}
	c.gate.open()
	close(c.connected)
	return nil
}

// IsConnected reports whether the broker connection is up now.
func (c *Client) IsConnected() bool { return c.paho.IsConnectionOpen() }

// Publish sends payload with QoS 1 and waits for the broker's PUBACK or for ctx to end. At most
// Config.MaxInflight publishes are in flight at once; the rest wait for a slot.
func (c *Client) Publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	select {
	case c.inflight <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("failed to publish to %s: %w", topic, ctx.Err())
	}
	defer func() { <-c.inflight }()
	if err := c.gate.wait(ctx); err != nil {
		return fmt.Errorf("failed to publish to %s: %w", topic, err)
	}
	if err := wait(ctx, c.paho.Publish(topic, 1, retained, payload)); err != nil {
		return fmt.Errorf("failed to publish to %s: %w", topic, err)
	}
	return nil
}

// Subscribe subscribes to filter with QoS 1 and hands its messages to handle until Unsubscribe.
// Unlike Listen it is not renewed after a reconnect: it is for short reads, such as reading
// back a retained message.
func (c *Client) Subscribe(ctx context.Context, filter string, handle func(Message)) error {
	c.routesMu.Lock()
	c.routes = append([]route{{filter: filter, handle: handle}}, c.routes...)
	c.routesMu.Unlock()
	if err := wait(ctx, c.paho.Subscribe(filter, 1, nil)); err != nil {
		c.dropRoute(filter)
		return fmt.Errorf("failed to subscribe to %s: %w", filter, err)
	}
	return nil
}

// Unsubscribe ends a subscription made with Subscribe.
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	defer c.dropRoute(filter)
	if err := wait(ctx, c.paho.Unsubscribe(filter)); err != nil {
		return fmt.Errorf("failed to unsubscribe from %s: %w", filter, err)
	}
	return nil
}

func (c *Client) dropRoute(filter string) {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	c.routes = slices.DeleteFunc(c.routes, func(r route) bool { return !r.listen && r.filter == filter })
}

// PublishOrdered sends payload with QoS 1 without waiting for the PUBACK and returns a function
// that waits for it. Messages handed to it one after another go out in that order, so a caller
// can publish a batch in order and then wait for all of it. It blocks while MaxInflight
// publishes are unacknowledged.
func (c *Client) PublishOrdered(ctx context.Context, topic string, retained bool, payload []byte) func(context.Context) error {
	select {
	case c.inflight <- struct{}{}:
	case <-ctx.Done():
		err := fmt.Errorf("failed to publish to %s: %w", topic, ctx.Err())
		return func(context.Context) error { return err }
	}
	if err := c.gate.wait(ctx); err != nil {
		<-c.inflight
		err = fmt.Errorf("failed to publish to %s: %w", topic, err)
		return func(context.Context) error { return err }
	}
	token := c.paho.Publish(topic, 1, retained, payload)
	go func() {
		<-token.Done()
		<-c.inflight
	}()
	return func(ctx context.Context) error {
		if err := wait(ctx, token); err != nil {
			return fmt.Errorf("failed to publish to %s: %w", topic, err)
		}
		return nil
	}
}

// Disconnect publishes nothing more and closes the connection, waiting up to quiesce for
// queued work to finish. The last will is not sent: publish the offline state first.
func (c *Client) Disconnect(quiesce time.Duration) {
	c.paho.Disconnect(uint(quiesce.Milliseconds()))
}

func wait(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sendGate holds publishes back while paho reconnects. After a reconnect paho resends the
// messages in its store, and a publish made between the connection coming up and paho listing
// its store would be both sent and resent, its acknowledgement completing a different publish.
// The gate closes when a reconnect starts and opens once paho listed its store.
type sendGate struct {
	mu     sync.Mutex
	opened chan struct{} // closed while publishes may go out
}

func newSendGate() *sendGate { return &sendGate{opened: make(chan struct{})} }

func (g *sendGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
}

func (g *sendGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
		g.opened = make(chan struct{})
	default:
	}
}

// wait blocks until the gate is open or ctx ends.
func (g *sendGate) wait(ctx context.Context) error {
	g.mu.Lock()
	opened := g.opened
	g.mu.Unlock()
	select {
	case <-opened:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resumeStore is paho's memory store, calling listed after paho listed the stored messages:
// on a reconnect, that is the list it resends.
type resumeStore struct {
	paho.Store
	listed func()
}

func (s resumeStore) All() []string {
	keys := s.Store.All()
	s.listed()
	return keys
}
