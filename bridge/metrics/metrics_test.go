package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCounters(t *testing.T) {
	tests := []struct {
		name string
		do   func(m *Metrics)
		// want is the exposition lines (without HELP and TYPE) of the metric named metric.
		metric string
		want   string
	}{
		{
			name: "requests by action and outcome",
			do: func(m *Metrics) {
				m.Request("send", "", time.Millisecond)
				m.Request("send", "not_allowed", 0)
				m.Request("send", "", 0)
			},
			metric: "matrix2mqtt_requests_total",
			want: `matrix2mqtt_requests_total{action="send",outcome="not_allowed"} 1
matrix2mqtt_requests_total{action="send",outcome="ok"} 2
`,
		},
		{
			name:   "deliveries and retries",
			do:     func(m *Metrics) { m.Delivered("send", "sent"); m.Delivered("redact_later", "expired") },
			metric: "matrix2mqtt_outbox_deliveries_total",
			want: `matrix2mqtt_outbox_deliveries_total{action="redact_later",result="expired"} 1
matrix2mqtt_outbox_deliveries_total{action="send",result="sent"} 1
`,
		},
		{
			name:   "the first MQTT connection is no reconnect",
			do:     func(m *Metrics) { m.MQTTConnected(); m.MQTTConnected(); m.MQTTConnected() },
			metric: "matrix2mqtt_reconnects_total",
			want: `matrix2mqtt_reconnects_total{peer="matrix"} 0
matrix2mqtt_reconnects_total{peer="mqtt"} 2
`,
		},
		{
			name: "a sync that works after failures is one Matrix reconnect",
			do: func(m *Metrics) {
				for _, err := range []error{nil, errors.New("down"), errors.New("down"), nil, nil} {
					m.SyncDone(err)
				}
			},
			metric: "matrix2mqtt_reconnects_total",
			want: `matrix2mqtt_reconnects_total{peer="matrix"} 1
matrix2mqtt_reconnects_total{peer="mqtt"} 0
`,
		},
		{
			name:   "sync errors",
			do:     func(m *Metrics) { m.SyncDone(errors.New("down")); m.SyncDone(errors.New("down")) },
			metric: "matrix2mqtt_matrix_sync_errors_total",
			want:   "matrix2mqtt_matrix_sync_errors_total 2\n",
		},
		{
			name:   "decryption failures by reason",
			do:     func(m *Metrics) { m.DecryptionFailed(true); m.DecryptionFailed(false); m.DecryptionFailed(true) },
			metric: "matrix2mqtt_e2ee_decryption_failures_total",
			want: `matrix2mqtt_e2ee_decryption_failures_total{reason="other"} 1
matrix2mqtt_e2ee_decryption_failures_total{reason="withheld"} 2
`,
		},
		{
			name:   "inbound by kind, none counted for zero",
			do:     func(m *Metrics) { m.Inbound("message", 3); m.Inbound("reaction", 0); m.Inbound("message", 1) },
			metric: "matrix2mqtt_inbound_events_total",
			want:   "matrix2mqtt_inbound_events_total{kind=\"message\"} 4\n",
		},
		{
			name: "media bytes by direction",
			do: func(m *Metrics) {
				m.MediaBytes(MediaUpload, 1000)
				m.MediaBytes(MediaDownload, 0)
				m.MediaBytes(MediaUpload, 24)
			},
			metric: "matrix2mqtt_media_bytes_total",
			want: `matrix2mqtt_media_bytes_total{direction="download"} 0
matrix2mqtt_media_bytes_total{direction="upload"} 1024
`,
		},
		{
			name:   "outbox gauges read at scrape time",
			do:     func(*Metrics) {},
			metric: "matrix2mqtt_outbox_oldest_age_seconds",
			want:   "matrix2mqtt_outbox_oldest_age_seconds 90\n",
		},
		{
			name:   "sync lag",
			do:     func(*Metrics) {},
			metric: "matrix2mqtt_matrix_sync_lag_seconds",
			want:   "matrix2mqtt_matrix_sync_lag_seconds 12\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
			m := New(Sources{
				Outbox:   func() (int, time.Duration) { return 2, 90 * time.Second },
				LastSync: func() time.Time { return now.Add(-12 * time.Second) },
				Now:      func() time.Time { return now },
			})
			tt.do(m)
			if got := samples(t, m, tt.metric); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// samples scrapes m over HTTP and returns the sample lines of metric.
func samples(t *testing.T, m *Metrics, metric string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	var out strings.Builder
	for line := range strings.SplitSeq(string(body), "\n") {
		if name, _, _ := strings.Cut(line, " "); name == metric || strings.HasPrefix(name, metric+"{") {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

func TestGoAndProcessCollectors(t *testing.T) {
	m := New(Sources{})
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if samples(t, m, name) == "" {
			t.Errorf("%s is missing", name)
		}
	}
}

func TestNilCountsNothing(t *testing.T) {
	var m *Metrics
	m.Request("send", "", time.Second)
	m.Delivered("send", "sent")
	m.Retry("send", "timeout")
	m.Inbound("message", 1)
	m.Notice("invite")
	m.MQTTConnected()
	m.SyncDone(nil)
	m.DecryptionFailed(true)
	m.MediaBytes(MediaUpload, 1)
}

// TestDashboardAndDocsUseExportedMetrics keeps configs/grafana-dashboard.json and
// docs/operations.md to the metrics that exist.
func TestDashboardAndDocsUseExportedMetrics(t *testing.T) {
	m := New(Sources{Outbox: func() (int, time.Duration) { return 0, 0 }, LastSync: time.Now, Now: time.Now})
	m.Request("send", "", 0)
	m.Delivered("send", "sent")
	m.Retry("send", "timeout")
	m.Inbound("message", 1)
	m.Notice("invite")
	m.SyncDone(errors.New("down"))
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			exported[f.GetName()+suffix] = true
		}
	}
	name := regexp.MustCompile(`\bmatrix2mqtt_[a-z_]+[a-z]\b`)
	for _, file := range []string{"../../configs/grafana-dashboard.json", "../../docs/operations.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := name.FindAllString(string(data), -1)
		if len(used) < 10 {
			t.Errorf("%s names only %d metrics", file, len(used))
		}
		for _, n := range used {
			if !exported[n] {
				t.Errorf("%s uses %s, which is not exported", file, n)
			}
		}
	}
}
