package actionstest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Responses records the responses a part publishes, with data as it reads on the wire
// (decoded from JSON).
type Responses chan wire.Response

// NewResponses makes a recorder that holds up to 16 responses.
func NewResponses() Responses { return make(Responses, 16) }

// Respond records one response.
func (r Responses) Respond(_ context.Context, _, requestID string, data any, err *wire.Error) {
	raw, _ := json.Marshal(data)
	var decoded any
	_ = json.Unmarshal(raw, &decoded)
	r <- wire.NewResponse(requestID, decoded, err)
}

// Next waits up to 5 seconds for the next response.
func (r Responses) Next(t testing.TB) wire.Response {
	t.Helper()
	select {
	case resp := <-r:
		return resp
	case <-time.After(5 * time.Second):
		t.Fatal("no response")
	}
	return wire.Response{}
}

// WaitFor polls cond for up to 5 seconds.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
