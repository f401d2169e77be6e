package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// megolmRoom is the m.room.encryption content of the E2EE stand-in's rooms: Megolm with the
// default rotation (a new session every 100 messages or every week), as Element makes rooms.
var megolmRoom = map[string]any{"algorithm": string(id.AlgorithmMegolmV1)}

// standInE2EE is what the stand-in answers for a bridge with E2EE on: the bot's own keys as it
// uploads them (device keys, one-time keys, cross-signing keys and their signatures, a key
// backup version), and a peer whose devices have real Olm accounts, so that mautrix fetches
// their signed device keys, claims signed one-time keys, makes Olm sessions and shares its
// Megolm sessions with them as with any homeserver. Nothing is checked; everything is kept
// only in memory.
type standInE2EE struct {
	bot, peer id.UserID
	devices   []*peerDevice

	mu           sync.Mutex
	own          map[string]map[string]any // the bot's device keys by device ID, with signatures uploaded later
	crossSigning map[string]map[string]any // the bot's master_key, self_signing_key, user_signing_key
	otks         int                       // the bot's one-time keys uploaded (none are claimed)
	backup       map[string]any            // the key backup version, once the bot made one
	roomKeys     map[id.DeviceID]int       // to-device messages to each of the peer's devices
	firstRoomKey json.RawMessage           // the first to-device message to the peer's first device
	firstEvent   json.RawMessage           // the first m.room.encrypted event the bot sent

	queries, claims, toDevice, backedUp atomic.Int64
}

// peerDevice is one device of the stand-in's peer: an Olm account and its signed device keys.
type peerDevice struct {
	id      id.DeviceID
	account *crypto.OlmAccount
	keys    mautrix.DeviceKeys
}

// newE2EEStandIn starts a stand-in with rooms encrypted rooms whose peer has devices devices.
func newE2EEStandIn(rooms, devices int) (*standIn, error) {
	enc := &standInE2EE{bot: standInBot, peer: standInPeer, own: map[string]map[string]any{},
		crossSigning: map[string]map[string]any{}, roomKeys: map[id.DeviceID]int{}}
	for i := range devices {
		d, err := newPeerDevice(enc.peer, id.DeviceID(fmt.Sprintf("PEER%02d", i)))
		if err != nil {
			return nil, err
		}
		enc.devices = append(enc.devices, d)
	}
	return startStandIn(rooms, enc), nil
}

// newPeerDevice makes an Olm account and its device keys, signed with its own Ed25519 key as a
// client signs them.
func newPeerDevice(user id.UserID, deviceID id.DeviceID) (*peerDevice, error) {
	acc := crypto.NewOlmAccount()
	keys := mautrix.DeviceKeys{
		UserID:     user,
		DeviceID:   deviceID,
		Algorithms: []id.Algorithm{id.AlgorithmMegolmV1, id.AlgorithmOlmV1},
		Keys: mautrix.KeyMap{
			id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, deviceID): acc.IdentityKey().String(),
			id.NewDeviceKeyID(id.KeyAlgorithmEd25519, deviceID):    acc.SigningKey().String(),
		},
	}
	sig, err := acc.SignJSON(keys)
	if err != nil {
		return nil, fmt.Errorf("failed to sign the device keys of %s: %w", deviceID, err)
	}
	keys.Signatures = signatures.NewSingleSignature(user, id.KeyAlgorithmEd25519, deviceID.String(), sig)
	return &peerDevice{id: deviceID, account: acc, keys: keys}, nil
}

// oneTimeKey makes a new one-time key of the device, signed as a client signs the ones it
// uploads. The caller holds the stand-in's lock.
func (d *peerDevice) oneTimeKey(user id.UserID) (id.KeyID, mautrix.OneTimeKey, error) {
	if err := d.account.Internal.GenOneTimeKeys(1); err != nil {
		return "", mautrix.OneTimeKey{}, fmt.Errorf("failed to make a one-time key for %s: %w", d.id, err)
	}
	keys, err := d.account.Internal.OneTimeKeys()
	if err != nil {
		return "", mautrix.OneTimeKey{}, fmt.Errorf("failed to read the one-time keys of %s: %w", d.id, err)
	}
	d.account.Internal.MarkKeysAsPublished()
	for keyID, key := range keys {
		otk := mautrix.OneTimeKey{Key: key, IsSigned: true}
		sig, err := d.account.SignJSON(&otk)
		if err != nil {
			return "", mautrix.OneTimeKey{}, fmt.Errorf("failed to sign a one-time key of %s: %w", d.id, err)
		}
		otk.Signatures = signatures.NewSingleSignature(user, id.KeyAlgorithmEd25519, d.id.String(), sig)
		return id.NewKeyID(id.KeyAlgorithmSignedCurve25519, keyID), otk, nil
	}
	return "", mautrix.OneTimeKey{}, fmt.Errorf("no one-time key was made for %s", d.id)
}

// register adds the E2EE endpoints to the stand-in's mux.
func (e *standInE2EE) register(mux *http.ServeMux, s *standIn) {
	mux.HandleFunc("POST /_matrix/client/v3/keys/upload", e.upload)
	mux.HandleFunc("POST /_matrix/client/v3/keys/query", e.query)
	mux.HandleFunc("POST /_matrix/client/v3/keys/claim", e.claim)
	mux.HandleFunc("POST /_matrix/client/v3/keys/device_signing/upload", e.uploadCrossSigning)
	mux.HandleFunc("POST /_matrix/client/v3/keys/signatures/upload", e.uploadSignatures)
	mux.HandleFunc("PUT /_matrix/client/v3/sendToDevice/{type}/{txn}", e.sendToDevice)
	mux.HandleFunc("GET /_matrix/client/v3/room_keys/version", e.backupVersion)
	mux.HandleFunc("POST /_matrix/client/v3/room_keys/version", e.createBackup)
	mux.HandleFunc("PUT /_matrix/client/v3/room_keys/keys", e.putBackupKeys)
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{room}/joined_members", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"joined": map[string]any{s.userID: map[string]any{}, s.peer: map[string]any{}}})
	})
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{room}/members", func(w http.ResponseWriter, r *http.Request) {
		room := r.PathValue("room")
		var chunk []any
		for i, user := range []string{s.peer, s.userID} {
			evt := stateEvent("m.room.member", user, user, map[string]any{"membership": "join"}, i)
			evt["room_id"] = room
			chunk = append(chunk, evt)
		}
		writeJSON(w, 200, map[string]any{"chunk": chunk})
	})
}

// readJSON decodes the request body into v, or answers 400 and reports false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeJSON(w, 400, map[string]any{"errcode": "M_NOT_JSON", "error": err.Error()})
		return false
	}
	return true
}

// otkCount is the bot's one-time key count as sync responses and /keys/upload report it.
func (e *standInE2EE) otkCount() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return map[string]int{"signed_curve25519": e.otks}
}

func (e *standInE2EE) upload(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys  map[string]any            `json:"device_keys"`
		OneTimeKeys map[string]map[string]any `json:"one_time_keys"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	e.mu.Lock()
	if deviceID, _ := req.DeviceKeys["device_id"].(string); deviceID != "" {
		e.own[deviceID] = req.DeviceKeys
	}
	e.otks += len(req.OneTimeKeys)
	e.mu.Unlock()
	writeJSON(w, 200, map[string]any{"one_time_key_counts": e.otkCount()})
}

// query answers the device keys of the bot (with its cross-signing keys) and of the peer. It
// lists all devices of a user even when the request names some.
func (e *standInE2EE) query(w http.ResponseWriter, r *http.Request) {
	var req mautrix.ReqQueryKeys
	if !readJSON(w, r, &req) {
		return
	}
	e.queries.Add(1)
	devices := map[id.UserID]any{}
	resp := map[string]any{"device_keys": devices, "failures": map[string]any{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for user := range req.DeviceKeys {
		switch user {
		case e.bot:
			devices[user] = e.own
			for usage, key := range e.crossSigning {
				resp[usage+"s"] = map[id.UserID]any{user: key}
			}
		case e.peer:
			peer := map[id.DeviceID]mautrix.DeviceKeys{}
			for _, d := range e.devices {
				peer[d.id] = d.keys
			}
			devices[user] = peer
		}
	}
	writeJSON(w, 200, resp)
}

// claim answers a new signed one-time key for each of the peer's devices asked for.
func (e *standInE2EE) claim(w http.ResponseWriter, r *http.Request) {
	var req mautrix.ReqClaimKeys
	if !readJSON(w, r, &req) {
		return
	}
	keys := map[id.DeviceID]map[id.KeyID]mautrix.OneTimeKey{}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.devices {
		if _, ok := req.OneTimeKeys[e.peer][d.id]; !ok {
			continue
		}
		keyID, otk, err := d.oneTimeKey(e.peer)
		if err != nil {
			writeJSON(w, 500, map[string]any{"errcode": "M_UNKNOWN", "error": err.Error()})
			return
		}
		keys[d.id] = map[id.KeyID]mautrix.OneTimeKey{keyID: otk}
		e.claims.Add(1)
	}
	writeJSON(w, 200, map[string]any{"one_time_keys": map[id.UserID]any{e.peer: keys}, "failures": map[string]any{}})
}

// uploadCrossSigning keeps the bot's cross-signing keys. It asks for no user-interactive
// authentication.
func (e *standInE2EE) uploadCrossSigning(w http.ResponseWriter, r *http.Request) {
	var req map[string]json.RawMessage
	if !readJSON(w, r, &req) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, usage := range []string{"master_key", "self_signing_key", "user_signing_key"} {
		var key map[string]any
		if err := json.Unmarshal(req[usage], &key); err != nil {
			writeJSON(w, 400, map[string]any{"errcode": "M_INVALID_PARAM", "error": usage + ": " + err.Error()})
			return
		}
		e.crossSigning[usage] = key
	}
	writeJSON(w, 200, map[string]any{})
}

// uploadSignatures adds the signatures the bot made of its own device and master key to the
// keys /keys/query answers.
func (e *standInE2EE) uploadSignatures(w http.ResponseWriter, r *http.Request) {
	var req map[id.UserID]map[string]struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for keyID, signed := range req[e.bot] {
		if target := e.signedKey(keyID); target != nil {
			mergeSignatures(target, signed.Signatures)
		}
	}
	writeJSON(w, 200, map[string]any{"failures": map[string]any{}})
}

// signedKey is the bot's device or cross-signing key that keyID (a device ID or a public key)
// names, or nil. The caller holds the lock.
func (e *standInE2EE) signedKey(keyID string) map[string]any {
	if device, ok := e.own[keyID]; ok {
		return device
	}
	for _, key := range e.crossSigning {
		if keys, _ := key["keys"].(map[string]any); keys["ed25519:"+keyID] != nil {
			return key
		}
	}
	return nil
}

func mergeSignatures(key map[string]any, sigs map[string]map[string]string) {
	all, _ := key["signatures"].(map[string]any)
	if all == nil {
		all = map[string]any{}
		key["signatures"] = all
	}
	for user, byKey := range sigs {
		mine, _ := all[user].(map[string]any)
		if mine == nil {
			mine = map[string]any{}
			all[user] = mine
		}
		for keyID, sig := range byKey {
			mine[keyID] = sig
		}
	}
}

// sendToDevice counts the requests and the messages to each of the peer's devices, and keeps
// the first one to its first device.
func (e *standInE2EE) sendToDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages map[id.UserID]map[id.DeviceID]json.RawMessage `json:"messages"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	e.toDevice.Add(1)
	e.mu.Lock()
	for deviceID, msg := range req.Messages[e.peer] {
		e.roomKeys[deviceID]++
		if deviceID == e.devices[0].id && e.firstRoomKey == nil && r.PathValue("type") == event.ToDeviceEncrypted.Type {
			e.firstRoomKey = msg
		}
	}
	e.mu.Unlock()
	writeJSON(w, 200, map[string]any{})
}

// keepFirstEvent keeps the content of the first encrypted event the bot sends.
func (e *standInE2EE) keepFirstEvent(r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.firstEvent != nil {
		return
	}
	if data, err := io.ReadAll(r.Body); err == nil {
		e.firstEvent = data
	}
}

func (e *standInE2EE) backupVersion(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.backup == nil {
		writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND", "error": "No current backup version"})
		return
	}
	writeJSON(w, 200, e.backup)
}

func (e *standInE2EE) createBackup(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if !readJSON(w, r, &req) {
		return
	}
	req["version"], req["count"], req["etag"] = "1", 0, "0"
	e.mu.Lock()
	e.backup = req
	e.mu.Unlock()
	writeJSON(w, 200, map[string]any{"version": "1"})
}

// putBackupKeys counts the room keys the bot backs up.
func (e *standInE2EE) putBackupKeys(w http.ResponseWriter, r *http.Request) {
	var req mautrix.ReqKeyBackup
	if !readJSON(w, r, &req) {
		return
	}
	n := 0
	for _, room := range req.Rooms {
		n += len(room.Sessions)
	}
	total := e.backedUp.Add(int64(n))
	writeJSON(w, 200, map[string]any{"etag": fmt.Sprint(total), "count": total})
}

// devicesWithKeys is how many of the peer's devices got at least one to-device message.
func (e *standInE2EE) devicesWithKeys() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, d := range e.devices {
		if e.roomKeys[d.id] > 0 {
			n++
		}
	}
	return n
}

// checkDecryptable decrypts, as the peer's first device, the first room key the bot sent it and
// with that key the first encrypted event: proof that the bridge really encrypted for the
// stand-in's devices. It needs the first encrypted event to be the first of its room's session.
func (e *standInE2EE) checkDecryptable() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.firstRoomKey == nil || e.firstEvent == nil {
		return errors.New("no room key for the peer's first device, or no encrypted event, reached the stand-in")
	}
	key, err := e.devices[0].decryptRoomKey(e.firstRoomKey)
	if err != nil {
		return err
	}
	var content event.EncryptedEventContent
	if err := json.Unmarshal(e.firstEvent, &content); err != nil {
		return fmt.Errorf("failed to parse the first encrypted event: %w", err)
	}
	if content.SessionID != key.SessionID {
		return fmt.Errorf("the first encrypted event is of session %s, the first room key of %s", content.SessionID, key.SessionID)
	}
	session, err := olm.NewInboundGroupSession([]byte(key.SessionKey))
	if err != nil {
		return fmt.Errorf("failed to load the room key: %w", err)
	}
	plain, _, err := session.Decrypt(content.MegolmCiphertext)
	if err != nil {
		return fmt.Errorf("failed to decrypt the first encrypted event: %w", err)
	}
	var decrypted struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(plain, &decrypted); err != nil || decrypted.Type != event.EventMessage.Type {
		return fmt.Errorf("the first encrypted event decrypted to %.100q, not a message", plain)
	}
	return nil
}

// decryptRoomKey decrypts an Olm to-device message to the device (the first of an Olm session,
// a pre-key message) and returns the room key it carries. The caller holds the stand-in's lock.
func (d *peerDevice) decryptRoomKey(raw json.RawMessage) (*event.RoomKeyEventContent, error) {
	var content event.EncryptedEventContent
	if err := json.Unmarshal(raw, &content); err != nil {
		return nil, fmt.Errorf("failed to parse the to-device message to %s: %w", d.id, err)
	}
	ciphertext, ok := content.OlmCiphertext[d.account.IdentityKey()]
	if !ok {
		return nil, fmt.Errorf("the to-device message to %s is not encrypted for its identity key", d.id)
	}
	session, err := d.account.Internal.NewInboundSessionFrom(&content.SenderKey, ciphertext.Body)
	if err != nil {
		return nil, fmt.Errorf("failed to make an inbound Olm session on %s: %w", d.id, err)
	}
	plain, err := session.Decrypt(ciphertext.Body, ciphertext.Type)
	if err != nil {
		return nil, fmt.Errorf("failed to decrypt the to-device message to %s: %w", d.id, err)
	}
	var payload struct {
		Type    string                    `json:"type"`
		Content event.RoomKeyEventContent `json:"content"`
	}
	if err := json.Unmarshal(plain, &payload); err != nil || payload.Type != event.ToDeviceRoomKey.Type {
		return nil, fmt.Errorf("the to-device message to %s decrypted to %.100q, not a room key", d.id, plain)
	}
	return &payload.Content, nil
}
