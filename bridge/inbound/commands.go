package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
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

// Validate reports the first setting that cannot work, naming it; names are the friendly names.
func (c CommandConfig) Validate(names targets.Names) error {
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
		if _, friendly := names[r]; friendly {
			continue
		}
		if err := targets.ValidateID(r); err != nil {
			return fmt.Errorf("COMMAND_ROOMS: %w, and not a friendly name from TARGETS", err)
		}
	}
	seen := map[string]bool{}
	for _, n := range c.Names {
		if !ValidCommandName(n) || strings.ToLower(n) != n {
			return fmt.Errorf("COMMANDS: %q must be lower case letters, digits, _, - or . and start with a letter or digit", n)
		}
		if seen[n] {
			return fmt.Errorf("COMMANDS: %q is listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// ValidCommandName is the syntax of a command name: it is a topic segment of
// `<base>/command/<name>` and a device trigger's subtype.
func ValidCommandName(name string) bool {
	for i, r := range name {
		letterOrDigit := unicode.IsLetter(r) || unicode.IsDigit(r)
		if i == 0 && !letterOrDigit || !letterOrDigit && r != '_' && r != '-' && r != '.' {
			return false
		}
	}
	return name != ""
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

// RoomFinder tells which room a target stands for, as last learned (no Matrix call).
type RoomFinder interface {
	RoomOf(target string) (id.RoomID, bool)
}

// Commands is the filter that turns messages in command rooms into commands: published on
// `<base>/room/<key>/command` and `<base>/command/<name>` when accepted, and answered with a
// reaction.
type Commands struct {
	cfg     CommandConfig
	rooms   RoomFinder
	senders map[id.UserID]bool
}

// NewCommands prepares the command filter; rooms finds the rooms of COMMAND_ROOMS.
func NewCommands(cfg CommandConfig, rooms RoomFinder) *Commands {
	f := &Commands{cfg: cfg, rooms: rooms, senders: map[id.UserID]bool{}}
	for _, s := range cfg.Senders {
		f.senders[id.UserID(s)] = true
	}
	return f
}

// Inbound publishes an accepted command and queues the bot's reaction.
func (f *Commands) Inbound(ctx context.Context, ev matrix.Event, key string, out *Output) {
	cmd, v := f.check(ev)
	logCommand(zerolog.Ctx(ctx), cmd, v)
	if v == accepted {
		out.Command = cmd
		out.Publish(out.Topics().Room(key, wire.KindCommand), cmd)
		out.Publish(out.Topics().Command(cmd.Command), cmd)
	}
	if job, ok := f.reaction(cmd, v); ok {
		out.Queue(job)
	}
}

// parseCommand splits a message into a command name (lower case) and its arguments. Only
// plain text messages count: notices are what bots send, so two bots cannot command each other,
// and an edit cannot fire a command again.
func parseCommand(prefix string, msg *wire.Message) (name string, args []string, ok bool) {
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
	if !ValidCommandName(name) {
		return "", nil, false
	}
	return name, append([]string{}, fields[1:]...), true
}

// check decides about one inbound event; for a command in a command room it returns the
// command, accepted or refused.
func (f *Commands) check(ev matrix.Event) (*wire.Command, verdict) {
	msg, ok := ev.Payload.(*wire.Message)
	if !ok || !f.cfg.Enabled() {
		return nil, notCommand
	}
	name, args, ok := parseCommand(f.cfg.Prefix, msg)
	if !ok || !f.commandRoom(ev.RoomID) {
		return nil, notCommand
	}
	cmd := &wire.Command{
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

// commandRoom reports whether roomID is one of COMMAND_ROOMS, as the targets last learned them:
// aliases resolved, a user ID standing for the DM with that user.
func (f *Commands) commandRoom(roomID id.RoomID) bool {
	for _, entry := range f.cfg.Rooms {
		if room, ok := f.rooms.RoomOf(entry); ok && room == roomID {
			return true
		}
	}
	return false
}

// reaction returns the job that reacts to a command, unless COMMAND_REACT is off. Its
// transaction ID comes from the event, so a batch handed over again after a crash does not
// react twice: the homeserver drops the repeated transaction.
func (f *Commands) reaction(cmd *wire.Command, v verdict) (outbox.Job, bool) {
	if !f.cfg.React || v == notCommand {
		return outbox.Job{}, false
	}
	key := reactRefused
	if v == accepted {
		key = reactAccepted
	}
	sum := sha256.Sum256([]byte(cmd.RoomID.String() + "\x00" + cmd.EventID.String()))
	return outbox.Job{
		Action:  actions.ActionCommandReact,
		Request: &actions.CommandReact{To: cmd.RoomID.String(), EventID: cmd.EventID, Key: key},
		TxnID:   "m2mcmd" + hex.EncodeToString(sum[:12]),
	}, true
}

// logCommand records the filter's decision for the operator.
func logCommand(log *zerolog.Logger, cmd *wire.Command, v verdict) {
	switch v {
	case accepted:
		commandFields(log.Info(), cmd).Msg("Accepted command")
	case refusedSender:
		commandFields(log.Warn(), cmd).Str("reason", "sender not in COMMAND_SENDERS").Msg("Refused command")
	case refusedUnverified:
		commandFields(log.Warn(), cmd).Str("reason", "device not verified (COMMAND_VERIFIED_ONLY)").Msg("Refused command")
	}
}

func commandFields(ev *zerolog.Event, cmd *wire.Command) *zerolog.Event {
	return ev.Str("command", cmd.Command).Stringer("sender", cmd.Sender).Stringer("room_id", cmd.RoomID).
		Stringer("event_id", cmd.EventID)
}
