package outbox

import (
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/metrics"
)

// TestDeliveryIsCounted: each finished entry is one answered request (with its latency from
// receipt on the outbox's clock), one delivery by result, and each failed attempt that is
// tried again one retry.
func TestDeliveryIsCounted(t *testing.T) {
	tests := []struct {
		name    string
		errs    []error
		expireS float64
		want    []string
	}{
		{
			name: "sent after two retries",
			errs: []error{errNetwork, httpError(502, "M_UNKNOWN", nil)},
			want: []string{
				`matrix2mqtt_requests_total{action="send",outcome="ok"} 1`,
				`matrix2mqtt_outbox_deliveries_total{action="send",result="sent"} 1`,
				`matrix2mqtt_outbox_retries_total{action="send",code="matrix_error"} 2`,
				`matrix2mqtt_request_duration_seconds_count{action="send"} 1`,
			},
		},
		{
			name: "failed at once",
			errs: []error{httpError(403, "M_FORBIDDEN", nil)},
			want: []string{
				`matrix2mqtt_requests_total{action="send",outcome="matrix_error"} 1`,
				`matrix2mqtt_outbox_deliveries_total{action="send",result="failed"} 1`,
				`matrix2mqtt_request_duration_seconds_bucket{action="send",le="0.005"} 1`,
			},
		},
		{
			name:    "expired",
			errs:    slices.Repeat([]error{errNetwork}, 8), // backoffs of 100 ms doubling: 25 s
			expireS: 5,
			want: []string{
				`matrix2mqtt_requests_total{action="send",outcome="expired"} 1`,
				`matrix2mqtt_outbox_deliveries_total{action="send",result="expired"} 1`,
				// Answered about 5 s after its receipt, on the fake clock.
				`matrix2mqtt_request_duration_seconds_bucket{action="send",le="2.5"} 0`,
				`matrix2mqtt_request_duration_seconds_bucket{action="send",le="10"} 1`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newTestOutbox(t, "", nil)
			m := metrics.New(metrics.Sources{})
			to.Metrics = m
			to.hs.Errs = tt.errs
			req := send("m", "!room:hs", "hi")
			req.ExpireS = tt.expireS
			done := to.run(to.enqueue(t, req))
			for answered := false; !answered; {
				select {
				case <-to.responses:
					answered = true
				case d := <-to.clock.Asked:
					to.clock.Advance(d)
				case <-time.After(5 * time.Second):
					t.Fatal("no response")
				}
			}
			<-done
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			body, _ := io.ReadAll(rec.Body)
			for _, line := range tt.want {
				if !strings.Contains(string(body), "\n"+line+"\n") {
					t.Errorf("no %q in the metrics", line)
				}
			}
		})
	}
}
