package jsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// LoginArgs are the arguments of Login.
type LoginArgs struct {
	Homeserver string `json:"homeserver"`
	UserID     string `json:"user_id"`
	Password   string `json:"password"`
	// DeviceID reuses a device ID; empty lets the server pick a new one. The crypto store is
	// in memory, so a process always starts as a new device: reuse an ID only after logging
	// that device out.
	DeviceID   string `json:"device_id,omitempty"`
	DeviceName string `json:"device_name,omitempty"`
	// AutoJoin accepts every invite as soon as it arrives (DMs that the bot opens).
	AutoJoin bool `json:"auto_join,omitempty"`
	// EmitEvents sends timeline, decryption and membership notifications to Options.OnEvent.
	EmitEvents bool `json:"emit_events,omitempty"`
	// AcceptVerifications accepts incoming verification requests and completes SAS by
	// confirming the emojis (the test compares them with the other side's; see
	// Verifications).
	AcceptVerifications bool `json:"accept_verifications,omitempty"`
	// RecoveryKey is a secret storage key (from BootstrapSecretStorage on another device)
	// that lets BootstrapCrossSigning(FromSecretStorage) import the cross-signing keys.
	RecoveryKey string `json:"recovery_key,omitempty"`
}

// LoginResult is what Login returns. Login returns once the first sync is done and the
// device keys are on the server.
type LoginResult struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	AccessToken string `json:"access_token"`
	TimingsMS   struct {
		Login       int `json:"login"`
		CryptoInit  int `json:"crypto_init"`
		SyncAndKeys int `json:"sync_and_keys"`
	} `json:"timings_ms"`
}

// Login logs in with a password, starts the Rust crypto (in memory) and syncs.
func (c *Client) Login(ctx context.Context, args LoginArgs) (*LoginResult, error) {
	var res LoginResult
	if err := c.Call(ctx, "login", args, &res); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.userID, c.deviceID = res.UserID, res.DeviceID
	c.mu.Unlock()
	return &res, nil
}

// CrossSigningStatus is this device's view of its own cross-signing.
type CrossSigningStatus struct {
	Ready                      bool `json:"ready"`
	PublicKeysOnDevice         bool `json:"public_keys_on_device"`
	PrivateKeysInSecretStorage bool `json:"private_keys_in_secret_storage"`
	PrivateKeysCachedLocally   struct {
		MasterKey      bool `json:"masterKey"`
		SelfSigningKey bool `json:"selfSigningKey"`
		UserSigningKey bool `json:"userSigningKey"`
	} `json:"private_keys_cached_locally"`
	// MasterKey is the public master key (unpadded base64), "" without cross-signing.
	MasterKey string `json:"master_key"`
}

// BootstrapCrossSigning creates new cross-signing keys for the user, uploads them (password
// user-interactive auth) and signs this device; it returns once the server shows this device
// as signed by its owner.
func (c *Client) BootstrapCrossSigning(ctx context.Context, password string) (*CrossSigningStatus, error) {
	var res CrossSigningStatus
	err := c.Call(ctx, "bootstrap_cross_signing", map[string]any{"password": password, "setup_new": true}, &res)
	return &res, err
}

// CrossSigningFromSecretStorage imports the user's existing cross-signing keys from secret
// storage (Login needs RecoveryKey) and signs this device with them.
func (c *Client) CrossSigningFromSecretStorage(ctx context.Context) (*CrossSigningStatus, error) {
	var res CrossSigningStatus
	err := c.Call(ctx, "bootstrap_cross_signing", map[string]any{"from_secret_storage": true, "setup_new": false}, &res)
	return &res, err
}

// BootstrapSecretStorage creates secret storage (and a key backup if keyBackup), stores the
// cross-signing keys in it and returns the recovery key.
func (c *Client) BootstrapSecretStorage(ctx context.Context, keyBackup bool) (string, error) {
	var res struct {
		RecoveryKey string `json:"recovery_key"`
	}
	err := c.Call(ctx, "bootstrap_secret_storage", map[string]any{"key_backup": keyBackup}, &res)
	return res.RecoveryKey, err
}

// CreateRoomArgs are the arguments of CreateRoom.
type CreateRoomArgs struct {
	Encrypted bool     `json:"encrypted,omitempty"`
	Invite    []string `json:"invite,omitempty"`
	Name      string   `json:"name,omitempty"`
	Topic     string   `json:"topic,omitempty"`
	// IsDirect marks the room as a DM (is_direct on the invites, m.direct account data) and
	// uses the trusted_private_chat preset.
	IsDirect bool   `json:"is_direct,omitempty"`
	Preset   string `json:"preset,omitempty"`
}

// CreateRoom creates a room and returns its ID once the client has synced it (with its
// encryption state, for an encrypted room).
func (c *Client) CreateRoom(ctx context.Context, args CreateRoomArgs) (string, error) {
	var res struct {
		RoomID string `json:"room_id"`
	}
	err := c.Call(ctx, "create_room", args, &res)
	return res.RoomID, err
}

// Join joins a room (ID or alias) and returns its ID once synced.
func (c *Client) Join(ctx context.Context, room string) (string, error) {
	var res struct {
		RoomID string `json:"room_id"`
	}
	err := c.Call(ctx, "join", map[string]any{"room_id": room}, &res)
	return res.RoomID, err
}

// WaitJoined waits until this user is joined to roomID (e.g. through AutoJoin) and reports
// whether the room is encrypted.
func (c *Client) WaitJoined(ctx context.Context, roomID string) (encrypted bool, err error) {
	var res struct {
		Encrypted bool `json:"encrypted"`
	}
	err = c.Call(ctx, "wait_joined", map[string]any{"room_id": roomID, "timeout_ms": waitMS(ctx, 0)}, &res)
	return res.Encrypted, err
}

// WaitMember waits until userID's membership in roomID is membership ("join" if empty), as
// this client sees it.
func (c *Client) WaitMember(ctx context.Context, roomID, userID, membership string) error {
	return c.Call(ctx, "wait_member", map[string]any{
		"room_id": roomID, "user_id": userID, "membership": membership, "timeout_ms": waitMS(ctx, 0),
	}, nil)
}

// SendArgs are the arguments of Send. Body is required unless Content is set.
type SendArgs struct {
	RoomID  string `json:"room_id"`
	Body    string `json:"body,omitempty"`
	HTML    string `json:"html,omitempty"`
	MsgType string `json:"msgtype,omitempty"` // m.text if empty
	ReplyTo string `json:"reply_to,omitempty"`
	Thread  string `json:"thread,omitempty"` // thread root event ID
	Edit    string `json:"edit,omitempty"`   // event ID to replace
	// Type and Content send an arbitrary event instead of a message built from the above.
	Type    string         `json:"type,omitempty"`
	Content map[string]any `json:"content,omitempty"`
}

// Send sends a message (encrypted if the room is) and returns its event ID.
func (c *Client) Send(ctx context.Context, args SendArgs) (string, error) {
	var res struct {
		EventID string `json:"event_id"`
	}
	err := c.Call(ctx, "send", args, &res)
	return res.EventID, err
}

// SendText sends a plain m.text message.
func (c *Client) SendText(ctx context.Context, roomID, body string) (string, error) {
	return c.Send(ctx, SendArgs{RoomID: roomID, Body: body})
}

// React sends an m.reaction annotation with key to eventID.
func (c *Client) React(ctx context.Context, roomID, eventID, key string) (string, error) {
	var res struct {
		EventID string `json:"event_id"`
	}
	err := c.Call(ctx, "react", map[string]any{"room_id": roomID, "event_id": eventID, "key": key}, &res)
	return res.EventID, err
}

// Redact redacts eventID and returns the redaction's event ID.
func (c *Client) Redact(ctx context.Context, roomID, eventID, reason string) (string, error) {
	var res struct {
		EventID string `json:"event_id"`
	}
	err := c.Call(ctx, "redact", map[string]any{"room_id": roomID, "event_id": eventID, "reason": reason}, &res)
	return res.EventID, err
}

// Attachment is a downloaded file: its SHA-256 (hex), size and bytes.
type Attachment struct {
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
	Data   []byte `json:"data"`
}

// DownloadAttachment downloads an mxc through the authenticated media API; given file (an
// event's `file`), it checks the ciphertext's hash and decrypts it as Element does.
func (c *Client) DownloadAttachment(ctx context.Context, url string, file map[string]any) (*Attachment, error) {
	var res Attachment
	err := c.Call(ctx, "download_attachment", map[string]any{"url": url, "file": file}, &res)
	return &res, err
}

// UploadAttachment encrypts data as Element does, uploads it, and returns the `file` of an
// encrypted media event.
func (c *Client) UploadAttachment(ctx context.Context, data []byte) (map[string]any, error) {
	var res struct {
		File map[string]any `json:"file"`
	}
	err := c.Call(ctx, "upload_attachment", map[string]any{"data": data}, &res)
	return res.File, err
}

// EventFilter selects the event that WaitEvent waits for; every set field must match.
// Events seen before the call count too.
type EventFilter struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id,omitempty"`
	// Type is the decrypted type (m.room.message, m.reaction, m.room.redaction, ...).
	Type   string `json:"type,omitempty"`
	Sender string `json:"sender,omitempty"`
	// Body matches content.body exactly, or as a substring with BodyContains.
	Body         string `json:"body,omitempty"`
	BodyContains bool   `json:"body_contains,omitempty"`
	// RelatesTo matches m.relates_to.event_id or m.relates_to.m.in_reply_to.event_id.
	RelatesTo string `json:"relates_to,omitempty"`
	// Redacts matches a redaction's target; Redacted waits until the event is redacted.
	Redacts  string `json:"redacts,omitempty"`
	Redacted bool   `json:"redacted,omitempty"`
	// Timeout is how long the client waits; zero means until shortly before ctx's deadline
	// (30 s without one).
	Timeout time.Duration `json:"-"`
}

// Event is a timeline event as the client sees it, decrypted when it was encrypted.
type Event struct {
	EventID        string         `json:"event_id"`
	RoomID         string         `json:"room_id"`
	Type           string         `json:"type"`
	Sender         string         `json:"sender"`
	OriginServerTS int64          `json:"origin_server_ts"`
	Content        map[string]any `json:"content"`
	StateKey       *string        `json:"state_key,omitempty"`
	Redacts        string         `json:"redacts,omitempty"`
	Redacted       bool           `json:"redacted"`

	Encrypted               bool           `json:"encrypted"`
	WireType                string         `json:"wire_type,omitempty"`
	WireContent             map[string]any `json:"wire_content,omitempty"`
	DecryptionFailed        bool           `json:"decryption_failed"`
	DecryptionFailureReason string         `json:"decryption_failure_reason,omitempty"`
	// SenderDevice is the device whose Olm identity key sent the Megolm session.
	SenderDevice       string              `json:"sender_device,omitempty"`
	SenderDeviceStatus *DeviceVerification `json:"sender_device_status,omitempty"`
	// ShieldColour (NONE, GREY, RED) and ShieldReason (UNSIGNED_DEVICE, UNVERIFIED_IDENTITY,
	// UNKNOWN_DEVICE, AUTHENTICITY_NOT_GUARANTEED, ...) are what Element would show next to
	// the message (getEncryptionInfoForEvent).
	ShieldColour string `json:"shield_colour,omitempty"`
	ShieldReason string `json:"shield_reason,omitempty"`
}

// Body is content.body, or "".
func (e *Event) Body() string {
	s, _ := e.Content["body"].(string)
	return s
}

// WaitEvent waits until an event matching f is in the room's timeline and, if encrypted,
// decrypted. When the event named by f.EventID arrived but stays undecryptable until the
// timeout, it returns the event and an error wrapping ErrDecryptionFailed; on other timeouts
// the *Error lists the room's undecryptable events.
func (c *Client) WaitEvent(ctx context.Context, f EventFilter) (*Event, error) {
	args := struct {
		EventFilter
		TimeoutMS int64 `json:"timeout_ms"`
	}{f, waitMS(ctx, f.Timeout)}
	var ev Event
	if err := c.Call(ctx, "wait_event", args, &ev); err != nil {
		return nil, err
	}
	if ev.DecryptionFailed {
		return &ev, fmt.Errorf("jsclient wait_event %s: %w (%s)", ev.EventID, ErrDecryptionFailed, ev.DecryptionFailureReason)
	}
	return &ev, nil
}

// DeviceVerification is getDeviceVerificationStatus for one device. Element shows a device
// as "verified by its owner" when SignedByOwner; IsVerified also needs the owner's identity
// to be verified by us (CrossSigningVerified) or the device to be verified locally.
type DeviceVerification struct {
	SignedByOwner        bool `json:"signed_by_owner"`
	CrossSigningVerified bool `json:"cross_signing_verified"`
	LocallyVerified      bool `json:"locally_verified"`
	IsVerified           bool `json:"is_verified"`
}

// DeviceStatus is the answer of DeviceStatus.
type DeviceStatus struct {
	// Known is false when the device is not in the user's device list.
	Known  bool                `json:"known"`
	Device *DeviceVerification `json:"device"`
	// User is getUserVerificationStatus for the device's owner.
	User struct {
		IsCrossSigningVerified  bool `json:"is_cross_signing_verified"`
		WasCrossSigningVerified bool `json:"was_cross_signing_verified"`
		IsVerified              bool `json:"is_verified"`
		NeedsUserApproval       bool `json:"needs_user_approval"`
	} `json:"user"`
}

// DeviceStatus reports how this client sees userID's deviceID, after refreshing the
// user's device list from the server.
func (c *Client) DeviceStatus(ctx context.Context, userID, deviceID string) (*DeviceStatus, error) {
	var res DeviceStatus
	err := c.Call(ctx, "device_status", map[string]any{"user_id": userID, "device_id": deviceID}, &res)
	return &res, err
}

// WaitDeviceSignedByOwner polls DeviceStatus until the device is signed by its owner.
func (c *Client) WaitDeviceSignedByOwner(ctx context.Context, userID, deviceID string, timeout time.Duration) (*DeviceStatus, error) {
	var res DeviceStatus
	err := c.Call(ctx, "device_status", map[string]any{
		"user_id": userID, "device_id": deviceID, "wait_signed_by_owner": true, "timeout_ms": waitMS(ctx, timeout),
	}, &res)
	return &res, err
}

// UserIdentity is a user's cross-signing identity as the server publishes it (keys/query).
type UserIdentity struct {
	HasIdentity    bool     `json:"has_identity"`
	MasterKey      string   `json:"master_key"`
	SelfSigningKey string   `json:"self_signing_key"`
	UserSigningKey string   `json:"user_signing_key"` // only for our own user
	Devices        []string `json:"devices"`
}

// UserIdentity queries the server for userID's cross-signing keys and devices.
func (c *Client) UserIdentity(ctx context.Context, userID string) (*UserIdentity, error) {
	var res UserIdentity
	err := c.Call(ctx, "user_identity", map[string]any{"user_id": userID}, &res)
	return &res, err
}

// SetDeviceVerified marks another device as verified locally (what a completed interactive
// verification of that device would do) and returns its new status.
func (c *Client) SetDeviceVerified(ctx context.Context, userID, deviceID string, verified bool) (*DeviceVerification, error) {
	var res DeviceVerification
	err := c.Call(ctx, "set_device_verified", map[string]any{"user_id": userID, "device_id": deviceID, "verified": verified}, &res)
	return &res, err
}

// Verification is the outcome of one SAS verification.
type Verification struct {
	UserID        string `json:"user_id"`
	DeviceID      string `json:"device_id"`
	RoomID        string `json:"room_id"`
	InitiatedByMe bool   `json:"initiated_by_me"`
	Done          bool   `json:"done"`
	Error         string `json:"error"`
	// Emoji are the SAS emoji names ("Dog", "Cat", ...), EmojiSymbols the emojis themselves,
	// Decimal the three numbers; compare them with the other side's.
	Emoji        []string `json:"emoji"`
	EmojiSymbols []string `json:"emoji_symbols"`
	Decimal      []int    `json:"decimal"`
	// After a verification that we started: our view of the other device and user.
	DeviceStatus             *DeviceVerification `json:"device_status,omitempty"`
	UserCrossSigningVerified bool                `json:"user_cross_signing_verified"`
}

// VerifyDevice runs an interactive SAS verification (to-device) with userID's deviceID:
// it requests it, starts SAS once the other side is ready, confirms the emojis and waits
// until both sides are done. With another user's device that also verifies the user's
// identity when the other side includes its master key. The other side must already know
// this device (Rust crypto ignores requests from devices it has not downloaded): share a
// room and let it fetch our keys first.
func (c *Client) VerifyDevice(ctx context.Context, userID, deviceID string) (*Verification, error) {
	var res Verification
	err := c.Call(ctx, "verify_device", map[string]any{"user_id": userID, "device_id": deviceID, "timeout_ms": waitMS(ctx, 0)}, &res)
	return &res, err
}

// VerifyUser runs an in-room SAS verification of userID (as Element does from a DM) in
// roomID.
func (c *Client) VerifyUser(ctx context.Context, userID, roomID string) (*Verification, error) {
	var res Verification
	err := c.Call(ctx, "verify_user", map[string]any{"user_id": userID, "room_id": roomID, "timeout_ms": waitMS(ctx, 0)}, &res)
	return &res, err
}

// Verifications lists the verifications this client took part in, newest last (incoming
// ones are accepted with LoginArgs.AcceptVerifications).
func (c *Client) Verifications(ctx context.Context) ([]Verification, error) {
	var res struct {
		Verifications []Verification `json:"verifications"`
	}
	err := c.Call(ctx, "verifications", nil, &res)
	return res.Verifications, err
}

// TrustUser signs userID's master key with our user-signing key, what a successful
// interactive verification ends with, without the SAS exchange: afterwards this client sees
// the user as cross-signing verified, and the user's cross-signed devices as verified.
// Needs BootstrapCrossSigning first.
func (c *Client) TrustUser(ctx context.Context, userID string) error {
	return c.Call(ctx, "trust_user", map[string]any{"user_id": userID, "timeout_ms": waitMS(ctx, 0)}, nil)
}

// BlacklistUnverified sets whether this client shares room keys only with devices it verified;
// the others are told the keys are withheld.
func (c *Client) BlacklistUnverified(ctx context.Context, value bool) error {
	return c.Call(ctx, "blacklist_unverified", map[string]any{"value": value}, nil)
}

// RoomEncrypted tells whether this client treats roomID as encrypted.
func (c *Client) RoomEncrypted(ctx context.Context, roomID string) (bool, error) {
	var res struct {
		Encrypted bool `json:"encrypted"`
	}
	err := c.Call(ctx, "room_encrypted", map[string]any{"room_id": roomID}, &res)
	return res.Encrypted, err
}

// Room is one entry of Rooms.
type Room struct {
	RoomID     string `json:"room_id"`
	Name       string `json:"name"`
	Membership string `json:"membership"`
	Encrypted  bool   `json:"encrypted"`
	DMInviter  string `json:"dm_inviter"`
}

// Rooms lists the rooms the client knows, with its membership in each.
func (c *Client) Rooms(ctx context.Context) ([]Room, error) {
	var res struct {
		Rooms []Room `json:"rooms"`
	}
	err := c.Call(ctx, "rooms", nil, &res)
	return res.Rooms, err
}

// Logout logs the device out; the process keeps running (Close stops it).
func (c *Client) Logout(ctx context.Context) error {
	if err := c.Call(ctx, "logout", nil, nil); err != nil {
		return err
	}
	c.mu.Lock()
	c.userID = ""
	c.mu.Unlock()
	return nil
}

// MatrixErrcode returns the Matrix errcode of a failed request ("" if none).
func MatrixErrcode(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Code != "matrix_error" {
		return ""
	}
	var d struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.Errcode
}

// waitMS is the client-side wait for a call: timeout if set, else until 1 s before ctx's
// deadline (so that the client's own, more informative, timeout error wins), else 30 s.
func waitMS(ctx context.Context, timeout time.Duration) int64 {
	if timeout > 0 {
		return timeout.Milliseconds()
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl) - time.Second
		if d < 100*time.Millisecond {
			d = 100 * time.Millisecond
		}
		return d.Milliseconds()
	}
	return 30000
}
