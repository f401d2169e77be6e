package actions

import (
	"context"
	"errors"
	"net/http"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	mxmedia "github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Outcome classifies a failed action: the error to answer, and whether it may pass (with the
// wait the homeserver asked for; 0 means the caller's backoff).
type Outcome struct {
	Err       *wire.Error
	Retry     bool
	RetryWait time.Duration
}

// Classify decides whether err is worth retrying and what to answer if it is not.
func Classify(err error) Outcome {
	var werr *wire.Error
	var respErr mautrix.RespError
	var httpErr mautrix.HTTPError
	switch {
	case errors.As(err, &werr):
		return Outcome{Err: werr}
	case errors.Is(err, matrix.ErrUnknownTarget):
		return Outcome{Err: &wire.Error{Code: wire.CodeUnknownTarget, Message: err.Error()}}
	case errors.Is(err, matrix.ErrUnsupportedEvent):
		return Outcome{Err: &wire.Error{Code: wire.CodeInvalidRequest, Message: err.Error()}}
	case errors.Is(err, mxmedia.ErrTooLarge):
		return Outcome{Err: &wire.Error{Code: wire.CodeTooLarge, Message: err.Error()}}
	case errors.Is(err, mxmedia.ErrBadFile):
		return Outcome{Err: &wire.Error{Code: wire.CodeInvalidRequest, Message: err.Error()}}
	case errors.Is(err, matrix.ErrEncryptionUnavailable):
		return Outcome{Err: &wire.Error{Code: wire.CodeNotAllowed, Message: err.Error()}}
	case errors.Is(err, context.DeadlineExceeded):
		return Outcome{Err: &wire.Error{Code: wire.CodeTimeout, Message: err.Error()}, Retry: true}
	case errors.Is(err, mautrix.MLimitExceeded):
		wait := time.Duration(0)
		if errors.As(err, &respErr) {
			if ms, ok := respErr.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
				wait = time.Duration(ms) * time.Millisecond
			}
		}
		return Outcome{Err: matrixError(err), Retry: true, RetryWait: wait}
	case errors.Is(err, mautrix.MUnknownToken), errors.Is(err, mautrix.MMissingToken):
		// The client logs in again or tells the operator; keep the message until then.
		return Outcome{Err: matrixError(err), Retry: true}
	case errors.As(err, &httpErr) && httpErr.Response != nil:
		status := httpErr.Response.StatusCode
		if status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests {
			return Outcome{Err: matrixError(err), Retry: true}
		}
		return Outcome{Err: matrixError(err)}
	case errors.As(err, &respErr):
		return Outcome{Err: matrixError(err)}
	}
	// Network errors and anything else that did not come from the homeserver may pass.
	return Outcome{Err: &wire.Error{Code: wire.CodeMatrixError, Message: err.Error()}, Retry: true}
}

func matrixError(err error) *wire.Error {
	e := &wire.Error{Code: wire.CodeMatrixError, Message: err.Error()}
	var respErr mautrix.RespError
	if errors.As(err, &respErr) {
		e.ErrCode = respErr.ErrCode
		if respErr.Err != "" {
			e.Message = respErr.Err
		}
	}
	if errors.Is(err, mautrix.MTooLarge) {
		e.Code = wire.CodeTooLarge
	}
	return e
}
