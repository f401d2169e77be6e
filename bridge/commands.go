package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// CommandConfig is the configuration of commands from chat (`!lights off`).
type CommandConfig struct {
	// Prefix starts a command.
	Prefix string `env:"COMMAND_PREFIX" envDefault:"!"`
	// Senders are the user IDs whose commands are accepted.
	Senders []string `env:"COMMAND_SENDERS"`
	// Rooms are the rooms where commands are read: room IDs, aliases, user IDs (their DM) or
	// friendly names.
	Rooms []string `env:"COMMAND_ROOMS"`
	// VerifiedOnly accepts commands only from devices cross-signed by their owner.
	VerifiedOnly bool `env:"COMMAND_VERIFIED_ONLY"`
	// React makes the bot react ✅ to accepted and ⛔ to refused commands.
	React bool `env:"COMMAND_REACT" envDefault:"true"`
	// Names are the commands announced to Home Assistant as device triggers.
	Names []string `env:"COMMANDS"`
}

// Enabled reports whether commands are read at all: only once both allowlists are set.
func (c CommandConfig) Enabled() bool { return len(c.Senders) > 0 && len(c.Rooms) > 0 }

func (c CommandConfig) validate(targets Targets) error {
	if c.Prefix == "" || strings.ContainsFunc(c.Prefix, unicode.IsSpace) || len(c.Prefix) > 16 {
		return fmt.Errorf("COMMAND_PREFIX: %q must be 1 to 16 bytes without spaces", c.Prefix)
	}
	for _, s := range c.Senders {
		if !strings.HasPrefix(s, "@") {
			return fmt.Errorf("COMMAND_SENDERS: %q is not a user ID (@user:server)", s)
		}
		if _, _, err := id.UserID(s).ParseAndValidateRelaxed(); err != nil {
			return fmt.Errorf("COMMAND_SENDERS: %q is not a valid user ID: %w", s, err)
		}
	}
	for _, r := range c.Rooms {
		if _, friendly := targets[r]; friendly {
			continue
		}
		if err := validateTargetID(r); err != nil {
			return fmt.Errorf("COMMAND_ROOMS: %w, and not a friendly name from TARGETS", err)
		}
	}
	seen := map[string]bool{}
	for _, n := range c.Names {
		if !validCommandName(n) || strings.ToLower(n) != n {
			return fmt.Errorf("COMMANDS: %q must be lower case letters, digits, _, - or . and start with a letter or digit", n)
		}
		if seen[n] {
			return fmt.Errorf("COMMANDS: %q is listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// validCommandName is the syntax of a command name: it is a topic segment of
// `<base>/command/<name>` and a device trigger's subtype.
func validCommandName(name string) bool {
	for i, r := range name {
		letterOrDigit := unicode.IsLetter(r) || unicode.IsDigit(r)
		if i == 0 && !letterOrDigit || !letterOrDigit && r != '_' && r != '-' && r != '.' {
			return false
		}
	}
	return name != ""
}

// Command is the payload of `<base>/room/<key>/command` and `<base>/command/<name>`.
type Command struct {
	Command        string     `json:"command"`
	Args           []string   `json:"args"`
	Raw            string     `json:"raw"`
	Sender         id.UserID  `json:"sender"`
	SenderName     string     `json:"sender_name"`
	RoomID         id.RoomID  `json:"room_id"`
	RoomName       string     `json:"room_name,omitempty"`
	EventID        id.EventID `json:"event_id"`
	SenderVerified bool       `json:"sender_verified"`
	Timestamp      int64      `json:"ts"`
}

// verdict is what the command filter decided about an inbound message.
type verdict int

const (
	// notCommand: not a command, or not in a command room; nothing but the message is published.
	notCommand verdict = iota
	// accepted: a command to publish.
	accepted
	// refusedSender: a command in a command room from a sender not in COMMAND_SENDERS.
	refusedSender
	// refusedUnverified: a command from an allowed sender's device that is not cross-signed,
	// with COMMAND_VERIFIED_ONLY set.
	refusedUnverified
)

// Reactions the bot gives to commands.
const (
	reactAccepted = "✅"
	reactRefused  = "⛔"
)

// actionCommandReact is the internal outbox action of the bot's reaction to a command: a react
// without a response.
const actionCommandReact = "command_react"

// commandReactTTL is how long a command reaction may wait in the outbox: a late ✅ would only
// confuse.
const commandReactTTL = 10 * time.Minute

// roomLookup finds the rooms that COMMAND_ROOMS entries stand for, without creating any.
type roomLookup interface {
	Resolve(ctx context.Context, target string) (id.RoomID, error)
	DirectRoom(ctx context.Context, user id.UserID) (id.RoomID, bool)
}

// commandFilter decides which inbound messages are commands.
type commandFilter struct {
	cfg     CommandConfig
	keys    *roomKeys
	rooms   roomLookup
	senders map[id.UserID]bool
}

func newCommandFilter(cfg CommandConfig, keys *roomKeys) *commandFilter {
	f := &commandFilter{cfg: cfg, keys: keys, senders: map[id.UserID]bool{}}
	for _, s := range cfg.Senders {
		f.senders[id.UserID(s)] = true
	}
	return f
}

// parseCommand splits a message into a command name (lower case) and its arguments. Only
// plain text messages count: notices are what bots send, so two bots cannot command each other,
// and an edit cannot fire a command again.
func parseCommand(prefix string, msg *matrix.Message) (name string, args []string, ok bool) {
	if msg.MsgType != string(event.MsgText) || msg.EditOf != "" {
		return "", nil, false
	}
	rest, ok := strings.CutPrefix(msg.Body, prefix)
	if !ok {
		return "", nil, false
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || !strings.HasPrefix(rest, fields[0]) {
		return "", nil, false // "! lights": a space after the prefix is not a command
	}
	name = strings.ToLower(fields[0])
	if !validCommandName(name) {
		return "", nil, false
	}
	return name, append([]string{}, fields[1:]...), true
}

// check decides about one inbound event; for a command in a command room it returns the
// command, accepted or refused.
func (f *commandFilter) check(ctx context.Context, ev matrix.Event) (*Command, verdict) {
	msg, ok := ev.Payload.(*matrix.Message)
	if !ok || !f.cfg.Enabled() {
		return nil, notCommand
	}
	name, args, ok := parseCommand(f.cfg.Prefix, msg)
	if !ok || !f.commandRoom(ctx, ev.RoomID) {
		return nil, notCommand
	}
	cmd := &Command{
		Command: name, Args: args, Raw: msg.Body, Sender: msg.Sender, SenderName: msg.SenderName,
		RoomID: msg.RoomID, RoomName: msg.RoomName, EventID: msg.EventID,
		SenderVerified: msg.SenderVerified, Timestamp: msg.Timestamp,
	}
	switch {
	case !f.senders[msg.Sender]:
		return cmd, refusedSender
	case f.cfg.VerifiedOnly && !msg.SenderVerified:
		return cmd, refusedUnverified
	}
	return cmd, accepted
}

// commandRoom reports whether roomID is one of COMMAND_ROOMS. Aliases are resolved (the Matrix
// client caches them for a few minutes); a user ID stands for the existing DM with that user.
func (f *commandFilter) commandRoom(ctx context.Context, roomID id.RoomID) bool {
	for _, entry := range f.cfg.Rooms {
		target, _ := f.keys.expand(entry)
		switch target[0] {
		case '!':
			if id.RoomID(target) == roomID {
				return true
			}
		case '#':
			resolveCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resolved, err := f.rooms.Resolve(resolveCtx, target)
			cancel()
			if err == nil && resolved == roomID {
				return true
			}
		case '@':
			if dm, ok := f.rooms.DirectRoom(ctx, id.UserID(target)); ok && dm == roomID {
				return true
			}
		}
	}
	return false
}

// commandReaction returns the outbox entry that reacts to a command, or nil when COMMAND_REACT
// is off. Its transaction ID comes from the event, so a batch handed over again after a crash
// does not react twice: the homeserver drops the repeated transaction.
func (b *Bridge) commandReaction(cmd *Command, v verdict) *entry {
	if !b.cfg.Commands.React || v == notCommand {
		return nil
	}
	key := reactRefused
	if v == accepted {
		key = reactAccepted
	}
	req, _ := json.Marshal(ReactRequest{To: cmd.RoomID.String(), EventID: cmd.EventID, Key: key})
	sum := sha256.Sum256([]byte(cmd.RoomID.String() + "\x00" + cmd.EventID.String()))
	now := b.clock.Now()
	return &entry{
		Action: actionCommandReact, Lane: cmd.RoomID.String(), Request: req,
		TxnID: "m2mcmd" + hex.EncodeToString(sum[:12]), CreatedAt: now, ExpiresAt: now.Add(commandReactTTL),
	}
}

// queueReactions commits command reactions to the outbox and starts them. A failure is logged
// and does not hold up the hand-over: the commands were published, only the reactions are lost.
func (b *Bridge) queueReactions(ctx context.Context, reactions []*entry) {
	if len(reactions) == 0 {
		return
	}
	if err := b.outbox.add(ctx, reactions); err != nil {
		b.log.Warn().Err(err).Int("count", len(reactions)).Msg("Failed to queue command reactions")
		return
	}
	for _, e := range reactions {
		b.stats.enqueued(e)
		b.lanes.push(b.work, e)
	}
}

// logCommand records the filter's decision for the operator.
func (b *Bridge) logCommand(cmd *Command, v verdict) {
	switch v {
	case accepted:
		commandFields(b.log.Info(), cmd).Msg("Accepted command")
	case refusedSender:
		commandFields(b.log.Warn(), cmd).Str("reason", "sender not in COMMAND_SENDERS").Msg("Refused command")
	case refusedUnverified:
		commandFields(b.log.Warn(), cmd).Str("reason", "device not verified (COMMAND_VERIFIED_ONLY)").Msg("Refused command")
	}
}

func commandFields(ev *zerolog.Event, cmd *Command) *zerolog.Event {
	return ev.Str("command", cmd.Command).Stringer("sender", cmd.Sender).Stringer("room_id", cmd.RoomID).
		Stringer("event_id", cmd.EventID)
}
