package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// serveHTTP serves /healthz (200 when both connections are up), /readyz (the same, with the
// reason when not), and /stats and /metrics (behind HTTP_TOKEN when it is set) on HTTP_LISTEN.
func (b *Bridge) serveHTTP(ctx context.Context) (stop func(), err error) {
	if b.cfg.HTTPListen == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !b.mqtt.IsConnected() || !b.matrix.Healthy() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reasons := b.notReady(); len(reasons) > 0 {
			http.Error(w, "not ready: "+strings.Join(reasons, "; "), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /stats", requireToken(b.cfg.HTTPToken, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.stats.Snapshot())
	})))
	mux.Handle("GET /metrics", requireToken(b.cfg.HTTPToken, b.metrics.Handler()))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	ln, err := net.Listen("tcp", b.cfg.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on HTTP_LISTEN %s: %w", b.cfg.HTTPListen, err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	return func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}, nil
}

// notReady lists why the bridge is not ready: the MQTT connection or the Matrix sync.
func (b *Bridge) notReady() []string {
	var reasons []string
	if !b.mqtt.IsConnected() {
		reasons = append(reasons, "MQTT broker not connected")
	}
	if !b.matrix.Healthy() {
		if last := b.matrix.LastSync(); last.IsZero() {
			reasons = append(reasons, "Matrix not synced yet")
		} else {
			reasons = append(reasons, fmt.Sprintf("Matrix sync failing (last success %s ago)",
				b.opts.Clock.Now().Sub(last).Round(time.Second)))
		}
	}
	return reasons
}

// requireToken lets through only requests with `Authorization: Bearer <token>`, when token is
// set. The comparison takes the same time whatever the token sent; a refusal tells nothing but
// 401.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		ok = ok && strings.EqualFold(scheme, "Bearer")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="matrix2mqtt"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
