package matrix

import (
	"sync"

	"maunium.net/go/mautrix/id"
)

// maxEchoes bounds the transaction IDs remembered from sync echoes of the bot's own events.
const maxEchoes = 4096

// echoes maps the transaction IDs of the bot's own events, seen in sync, to their event IDs;
// the oldest are forgotten first.
type echoes struct {
	mu    sync.Mutex
	ids   map[string]id.EventID
	order []string
}

func newEchoes() *echoes { return &echoes{ids: map[string]id.EventID{}} }

func (e *echoes) add(txnID string, evtID id.EventID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.ids[txnID]; ok {
		return
	}
	if len(e.order) == maxEchoes {
		delete(e.ids, e.order[0])
		e.order = e.order[1:]
	}
	e.ids[txnID] = evtID
	e.order = append(e.order, txnID)
}

func (e *echoes) get(txnID string) (id.EventID, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	evtID, ok := e.ids[txnID]
	return evtID, ok
}
