// Package wire is the MQTT contract of the bridge: topics, request decoding, responses and their
// error codes, and the payloads the bridge publishes. Nothing here talks to MQTT or Matrix.
package wire

import (
	"fmt"
	"strings"
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

// Error is the error object of a response. It is also a Go error, so actions can return it.
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

// Errorf returns an Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Within names the object field in the error of one of its values: "field 'url': …" becomes
// "field 'avatar.url': …", and a message naming no field is prefixed ("avatar: the file is
// empty").
func Within(field string, werr *Error) *Error {
	if strings.Contains(werr.Message, "field '") {
		return &Error{Code: werr.Code, ErrCode: werr.ErrCode, Message: strings.Replace(werr.Message, "field '", "field '"+field+".", 1)}
	}
	return &Error{Code: werr.Code, ErrCode: werr.ErrCode, Message: field + ": " + werr.Message}
}

// Response is the payload of `<base>/bridge/response/<action>`.
type Response struct {
	ID     string `json:"id,omitempty"`
	Status string `json:"status"`
	Data   any    `json:"data,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// NewResponse is the response of a request: ok with data, or the error.
func NewResponse(id string, data any, err *Error) Response {
	if err != nil {
		return Response{ID: id, Status: "error", Error: err}
	}
	return Response{ID: id, Status: "ok", Data: data}
}
