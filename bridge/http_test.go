package bridge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("secret figures")) })
	tests := []struct {
		name, token, header string
		want                int
	}{
		{"no token configured lets everyone in", "", "", http.StatusOK},
		{"the right token", "s3cret", "Bearer s3cret", http.StatusOK},
		{"the scheme in any case", "s3cret", "bearer s3cret", http.StatusOK},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"a wrong token", "s3cret", "Bearer s3creT", http.StatusUnauthorized},
		{"a prefix of the token", "s3cret", "Bearer s3c", http.StatusUnauthorized},
		{"the token and more", "s3cret", "Bearer s3cret2", http.StatusUnauthorized},
		{"another scheme", "s3cret", "Basic s3cret", http.StatusUnauthorized},
		{"the token alone", "s3cret", "s3cret", http.StatusUnauthorized},
		{"an empty bearer", "s3cret", "Bearer ", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			requireToken(tt.token, ok).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				if body := rec.Body.String(); body != "unauthorized\n" {
					t.Errorf("body %q tells more than unauthorized", body)
				}
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			}
		})
	}
}
