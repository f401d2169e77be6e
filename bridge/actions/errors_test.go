package actions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

func httpError(status int, errcode string, extra map[string]any) error {
	resp := mautrix.RespError{ErrCode: errcode, Err: "server says no", StatusCode: status, ExtraData: extra}
	return fmt.Errorf("failed to send: %w", mautrix.HTTPError{Response: &http.Response{StatusCode: status}, RespError: &resp})
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		retry   bool
		wait    time.Duration
		code    string
		errcode string
	}{
		{"forbidden", httpError(403, "M_FORBIDDEN", nil), false, 0, wire.CodeMatrixError, "M_FORBIDDEN"},
		{"not found", httpError(404, "M_NOT_FOUND", nil), false, 0, wire.CodeMatrixError, "M_NOT_FOUND"},
		{"bad json", httpError(400, "M_BAD_JSON", nil), false, 0, wire.CodeMatrixError, "M_BAD_JSON"},
		{"too large", httpError(413, "M_TOO_LARGE", nil), false, 0, wire.CodeTooLarge, "M_TOO_LARGE"},
		{"rate limited", httpError(429, "M_LIMIT_EXCEEDED", map[string]any{"retry_after_ms": float64(1500)}), true, 1500 * time.Millisecond, wire.CodeMatrixError, "M_LIMIT_EXCEEDED"},
		{"server error", httpError(502, "M_UNKNOWN", nil), true, 0, wire.CodeMatrixError, "M_UNKNOWN"},
		{"token", httpError(401, "M_UNKNOWN_TOKEN", nil), true, 0, wire.CodeMatrixError, "M_UNKNOWN_TOKEN"},
		{"network", errors.New("dial tcp: connection refused"), true, 0, wire.CodeMatrixError, ""},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true, 0, wire.CodeTimeout, ""},
		{"unknown target", fmt.Errorf("%w: alias #x:hs does not exist", matrix.ErrUnknownTarget), false, 0, wire.CodeUnknownTarget, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := Classify(tc.err)
			if out.Retry != tc.retry || out.RetryWait != tc.wait || out.Err.Code != tc.code || out.Err.ErrCode != tc.errcode {
				t.Fatalf("classify = %+v %+v", out, out.Err)
			}
		})
	}
}
