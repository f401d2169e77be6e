package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// Error codes of error responses; they are part of the MQTT contract.
const (
	CodeInvalidRequest = "invalid_request"
	CodeUnknownAction  = "unknown_action"
	CodeUnknownTarget  = "unknown_target"
	CodeNotAllowed     = "not_allowed"
	CodeTooLarge       = "too_large"
	CodeExpired        = "expired"
	CodeMatrixError    = "matrix_error"
	CodeTimeout        = "timeout"
)

// Error is the error object of a response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// ErrCode is the Matrix errcode, with CodeMatrixError.
	ErrCode string `json:"errcode,omitempty"`
}

func (e *Error) Error() string {
	if e.ErrCode != "" {
		return e.Code + " (" + e.ErrCode + "): " + e.Message
	}
	return e.Code + ": " + e.Message
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// outcome classifies a failed Matrix call: a response error for the client, and, for errors that
// may pass, how long to wait before trying again (0 means the caller's backoff).
type outcome struct {
	err       *Error
	retry     bool
	retryWait time.Duration
}

// classify decides whether err is worth retrying and what to answer if it is not.
func classify(err error) outcome {
	var respErr mautrix.RespError
	var httpErr mautrix.HTTPError
	switch {
	case errors.Is(err, matrix.ErrUnknownTarget):
		return outcome{err: &Error{Code: CodeUnknownTarget, Message: err.Error()}}
	case errors.Is(err, matrix.ErrUnsupportedEvent):
		return outcome{err: &Error{Code: CodeInvalidRequest, Message: err.Error()}}
	case errors.Is(err, matrix.ErrEncryptionUnavailable):
		return outcome{err: &Error{Code: CodeNotAllowed, Message: err.Error()}}
	case errors.Is(err, context.DeadlineExceeded):
		return outcome{err: &Error{Code: CodeTimeout, Message: err.Error()}, retry: true}
	case errors.Is(err, mautrix.MLimitExceeded):
		wait := time.Duration(0)
		if errors.As(err, &respErr) {
			if ms, ok := respErr.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
				wait = time.Duration(ms) * time.Millisecond
			}
		}
		return outcome{err: matrixError(err), retry: true, retryWait: wait}
	case errors.Is(err, mautrix.MUnknownToken), errors.Is(err, mautrix.MMissingToken):
		// The client logs in again or tells the operator; keep the message until then.
		return outcome{err: matrixError(err), retry: true}
	case errors.As(err, &httpErr) && httpErr.Response != nil:
		status := httpErr.Response.StatusCode
		if status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests {
			return outcome{err: matrixError(err), retry: true}
		}
		return outcome{err: matrixError(err)}
	case errors.As(err, &respErr):
		return outcome{err: matrixError(err)}
	}
	// Network errors and anything else that did not come from the homeserver may pass.
	return outcome{err: &Error{Code: CodeMatrixError, Message: err.Error()}, retry: true}
}

func matrixError(err error) *Error {
	e := &Error{Code: CodeMatrixError, Message: err.Error()}
	var respErr mautrix.RespError
	if errors.As(err, &respErr) {
		e.ErrCode = respErr.ErrCode
		if respErr.Err != "" {
			e.Message = respErr.Err
		}
	}
	if errors.Is(err, mautrix.MTooLarge) {
		e.Code = CodeTooLarge
	}
	return e
}
