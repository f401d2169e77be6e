// Package catalog assembles the registry of every action the bridge has, family by family.
package catalog

import (
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/polls"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/rooms"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
)

// Default is the registry of every action the bridge has.
func Default() *actions.Registry {
	return actions.NewRegistry(
		actions.Messages, actions.LiveMessages, actions.Lookups, actions.Outbox, actions.Internal,
		rooms.Rooms, rooms.Admin, rooms.Create, rooms.Broadcasts,
		polls.Polls,
		sendmedia.Media,
	)
}
