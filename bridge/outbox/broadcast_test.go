package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/rooms"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// TestBroadcastProgress: a room that fails for good is that room's result and the others go
// on; a room that may pass is retried after the others, alone, with its own transaction ID; the
// rooms done are not sent again.
func TestBroadcastProgress(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		// Room a: sent. Room b: forbidden. Room c: network error, then sent on the retry.
		to.hs.Errs = []error{nil, httpError(403, "M_FORBIDDEN", nil), errNetwork}
		req, werr := catalog.Default().Parse("broadcast", "", []byte(`{"id":"b","to":["!a:hs","!b:hs","!c:hs"],"text":"hi"}`), to.Env.Targets)
		if werr != nil {
			t.Fatal(werr)
		}
		e, err := to.NewEntry(Job{Action: "broadcast", Request: req.(actions.Durable)})
		if err != nil {
			t.Fatal(err)
		}
		if e.Lane != rooms.BroadcastLane {
			t.Fatalf("lane = %s", e.Lane)
		}
		if _, err := to.Add(context.Background(), []*Entry{e}); err != nil {
			t.Fatal(err)
		}
		done := to.run(e)
		to.sleeps(t) // room c failed; a and b are recorded
		if p := to.pending(t); len(p) != 1 || !strings.Contains(string(p[0].Progress), "M_FORBIDDEN") {
			t.Fatalf("stored progress = %+v", p)
		}
		to.clock.Advance(2 * time.Second)
		r := to.responses.Next(t)
		<-done
		want := []string{e.TxnID, e.TxnID + ".2"} // a, then c on the retry; b never got through
		if !slices.Equal(to.hs.Sent, want) {
			t.Fatalf("sent %v, want %v", to.hs.Sent, want)
		}
		raw, _ := json.Marshal(r.Data)
		var data rooms.BroadcastData
		if err := json.Unmarshal(raw, &data); err != nil {
			t.Fatal(err)
		}
		if r.Status != "ok" || data.Sent != 2 || data.Failed != 1 || data.Results[1].Error.ErrCode != "M_FORBIDDEN" ||
			string(data.Results[2].EventID) != "$"+e.TxnID+".2" {
			t.Fatalf("response %+v data %s", r, raw)
		}
	})
}

// TestBroadcastOneCopyPerRoom: targets that name the same room (a room ID and its alias) send
// it one copy, and each target gets that copy's result; a retry of the first also settles the
// second.
func TestBroadcastOneCopyPerRoom(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		to.hs.Aliases = map[string]id.RoomID{"#a:hs": "!a:hs"}
		to.hs.Errs = []error{errNetwork} // the first send to !a:hs fails, then passes
		req, werr := catalog.Default().Parse("broadcast", "", []byte(`{"id":"b","to":["!a:hs","#a:hs","!b:hs"],"text":"hi"}`), to.Env.Targets)
		if werr != nil {
			t.Fatal(werr)
		}
		e := to.add(t, Job{Action: "broadcast", Request: req.(actions.Durable)})
		done := to.run(e)
		to.sleeps(t)
		to.clock.Advance(2 * time.Second)
		r := to.responses.Next(t)
		<-done
		if want := []string{e.TxnID + ".2", e.TxnID}; !slices.Equal(to.hs.Sent, want) {
			t.Fatalf("sent %v, want %v (one copy per room)", to.hs.Sent, want)
		}
		raw, _ := json.Marshal(r.Data)
		var data rooms.BroadcastData
		if err := json.Unmarshal(raw, &data); err != nil {
			t.Fatal(err)
		}
		if data.Sent != 3 || data.Results[0].EventID == "" || data.Results[1].EventID != data.Results[0].EventID || data.Results[1].RoomID != "!a:hs" {
			t.Fatalf("response %+v data %s", r, raw)
		}
	})
}

// TestBroadcastClaimOutlivesAnAttempt: a room claimed by a target whose send failed stays that
// target's in the next attempt, even when a target before it resolves to the same room only
// then; the room is sent one copy, under its owner's transaction ID.
func TestBroadcastClaimOutlivesAnAttempt(t *testing.T) {
	for _, lost := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d lost answers", lost), func(t *testing.T) {
			eachDB(t, func(t *testing.T, to *testOutbox) {
				to.hs.Aliases = map[string]id.RoomID{"#a:hs": "!a:hs"}
				to.hs.ResolveErrs = map[string]error{"#a:hs": errNetwork} // the alias cannot be looked up yet
				to.hs.Errs = slices.Repeat([]error{errNetwork}, lost)     // and the sends to !a:hs lose their answers
				req, werr := catalog.Default().Parse("broadcast", "", []byte(`{"id":"b","to":["#a:hs","!a:hs"],"text":"hi"}`), to.Env.Targets)
				if werr != nil {
					t.Fatal(werr)
				}
				e := to.add(t, Job{Action: "broadcast", Request: req.(actions.Durable)})
				done := to.run(e)
				wait := to.sleeps(t)
				to.hs.Mu.Lock()
				to.hs.ResolveErrs = nil
				to.hs.Mu.Unlock()
				to.clock.Advance(wait)
				var r wire.Response
				for r.ID == "" { // the retries after the later lost answers
					select {
					case r = <-to.responses:
					case wait := <-to.clock.Asked:
						to.clock.Advance(wait)
					case <-time.After(5 * time.Second):
						t.Fatal("no answer")
					}
				}
				<-done
				if want := []string{e.TxnID + ".1"}; !slices.Equal(to.hs.Sent, want) {
					t.Fatalf("sent %v, want %v: one copy, under the owner's transaction ID", to.hs.Sent, want)
				}
				raw, _ := json.Marshal(r.Data)
				var data rooms.BroadcastData
				if err := json.Unmarshal(raw, &data); err != nil {
					t.Fatal(err)
				}
				if data.Results[0].EventID == "" || data.Results[0].EventID != data.Results[1].EventID {
					t.Fatalf("data %s", raw)
				}
			})
		})
	}
}
