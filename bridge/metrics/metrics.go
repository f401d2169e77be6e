// Package metrics holds the bridge's Prometheus metrics, in a registry of its own, and serves
// them on /metrics.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric of the bridge.
const namespace = "matrix2mqtt"

// OutcomeOK is the outcome label of a request answered without an error; the others are the
// error codes.
const OutcomeOK = "ok"

// The directions of matrix2mqtt_media_bytes_total.
const (
	MediaUpload   = "upload"
	MediaDownload = "download"
)

// Sources are the figures that are read when the metrics are scraped.
type Sources struct {
	// Outbox returns how many requests wait in the outbox and how long the oldest has waited.
	Outbox func() (pending int, oldest time.Duration)
	// LastSync returns when the last Matrix sync succeeded (zero before the first).
	LastSync func() time.Time
	// Now is the clock that LastSync is measured against.
	Now func() time.Time
}

// Metrics are the bridge's counters. A nil *Metrics counts nothing, so the parts work without
// it in unit tests.
type Metrics struct {
	registry *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	deliveries      *prometheus.CounterVec
	retries         *prometheus.CounterVec
	inbound         *prometheus.CounterVec
	notices         *prometheus.CounterVec
	syncErrors      prometheus.Counter
	connects        *prometheus.CounterVec
	decryptFailures *prometheus.CounterVec
	mediaBytes      *prometheus.CounterVec

	mu         sync.Mutex
	mqttUp     bool // the MQTT connection was up before
	matrixDown bool // the last sync failed
}

// New makes the metrics and registers them, with the Go and process collectors, in a registry
// of their own.
func New(src Sources) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Requests answered, by action and outcome (ok or the error code).",
		}, []string{"action", "outcome"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time from a request's receipt to its response, by action.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"action"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_deliveries_total",
			Help: "Outbox entries finished, by action and result (sent, failed, expired); internal follow-ups included.",
		}, []string{"action", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_retries_total",
			Help: "Delivery attempts that failed and will be tried again, by action and error code.",
		}, []string{"action", "code"}),
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inbound_events_total",
			Help: "Matrix events published to MQTT, by kind.",
		}, []string{"kind"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "notices_total",
			Help: "Notices published on <base>/bridge/event, by type.",
		}, []string{"type"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "matrix_sync_errors_total",
			Help: "Matrix sync requests that failed.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconnects_total",
			Help: "Connections that came back after they were lost, by peer (mqtt, matrix).",
		}, []string{"peer"}),
		decryptFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "e2ee_decryption_failures_total",
			Help: "Encrypted events that could not be decrypted, by reason (withheld: the sender withheld the key; other).",
		}, []string{"reason"}),
		mediaBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "media_bytes_total",
			Help: "Bytes of files moved to and from the homeserver's content repository, by direction (upload, download).",
		}, []string{"direction"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration, m.deliveries, m.retries, m.inbound, m.notices,
		m.syncErrors, m.connects, m.decryptFailures, m.mediaBytes,
	)
	for _, peer := range []string{"mqtt", "matrix"} {
		m.connects.WithLabelValues(peer)
	}
	for _, reason := range []string{"withheld", "other"} {
		m.decryptFailures.WithLabelValues(reason)
	}
	for _, direction := range []string{MediaUpload, MediaDownload} {
		m.mediaBytes.WithLabelValues(direction)
	}
	if src.Outbox != nil {
		m.registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: namespace, Name: "outbox_pending",
				Help: "Requests waiting in the outbox (scheduled follow-ups not included).",
			}, func() float64 { n, _ := src.Outbox(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: namespace, Name: "outbox_oldest_age_seconds",
				Help: "How long the oldest request in the outbox has waited; 0 when it is empty.",
			}, func() float64 { _, age := src.Outbox(); return age.Seconds() }),
		)
	}
	if src.LastSync != nil && src.Now != nil {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "matrix_sync_lag_seconds",
			Help: "Time since the last Matrix sync request succeeded (a long poll returns within MATRIX_SYNC_TIMEOUT); -1 before the first.",
		}, func() float64 {
			last := src.LastSync()
			if last.IsZero() {
				return -1
			}
			return src.Now().Sub(last).Seconds()
		}))
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Request counts a request answered after latency with the error code (empty for success).
func (m *Metrics) Request(action, code string, latency time.Duration) {
	if m == nil {
		return
	}
	if code == "" {
		code = OutcomeOK
	}
	m.requests.WithLabelValues(action, code).Inc()
	m.requestDuration.WithLabelValues(action).Observe(latency.Seconds())
}

// Delivered counts an outbox entry that finished with result sent, failed or expired.
func (m *Metrics) Delivered(action, result string) {
	if m != nil {
		m.deliveries.WithLabelValues(action, result).Inc()
	}
}

// Retry counts a delivery attempt that failed with code and will be tried again.
func (m *Metrics) Retry(action, code string) {
	if m != nil {
		m.retries.WithLabelValues(action, code).Inc()
	}
}

// Inbound counts n Matrix events of kind published to MQTT.
func (m *Metrics) Inbound(kind string, n int) {
	if m != nil && n > 0 {
		m.inbound.WithLabelValues(kind).Add(float64(n))
	}
}

// Notice counts a notice of type published on `<base>/bridge/event`.
func (m *Metrics) Notice(noticeType string) {
	if m != nil {
		m.notices.WithLabelValues(noticeType).Inc()
	}
}

// MQTTConnected counts every MQTT connection after the first as a reconnect.
func (m *Metrics) MQTTConnected() {
	if m == nil {
		return
	}
	m.mu.Lock()
	again := m.mqttUp
	m.mqttUp = true
	m.mu.Unlock()
	if again {
		m.connects.WithLabelValues("mqtt").Inc()
	}
}

// SyncDone counts a Matrix sync request: a failure (err not nil) is a sync error, and the first
// success after a failure a reconnect.
func (m *Metrics) SyncDone(err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	wasDown := m.matrixDown
	m.matrixDown = err != nil
	m.mu.Unlock()
	switch {
	case err != nil:
		m.syncErrors.Inc()
	case wasDown:
		m.connects.WithLabelValues("matrix").Inc()
	}
}

// DecryptionFailed counts an event that could not be decrypted; withheld tells that its sender
// withheld the key.
func (m *Metrics) DecryptionFailed(withheld bool) {
	if m == nil {
		return
	}
	reason := "other"
	if withheld {
		reason = "withheld"
	}
	m.decryptFailures.WithLabelValues(reason).Inc()
}

// MediaBytes counts n bytes of a file uploaded to or downloaded from the content repository
// (direction MediaUpload or MediaDownload).
func (m *Metrics) MediaBytes(direction string, n int) {
	if m != nil && n > 0 {
		m.mediaBytes.WithLabelValues(direction).Add(float64(n))
	}
}
