package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// call sends body as JSON to the stand-in and decodes its answer into out (unless nil).
func call(t *testing.T, s *standIn, method, path string, body, out any) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, s.srv.URL+path, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// TestE2EEStandIn checks that the peer's device keys and one-time keys carry valid signatures,
// and that a room key sent over an Olm session made from a claimed key, and an event encrypted
// with it, pass the stand-in's decryption check, as the bridge's do.
func TestE2EEStandIn(t *testing.T) {
	s, err := newE2EEStandIn(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	peer := id.UserID(s.peer)
	var keys mautrix.RespQueryKeys
	call(t, s, "POST", "/_matrix/client/v3/keys/query", mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{peer: {}}}, &keys)
	if len(keys.DeviceKeys[peer]) != 2 {
		t.Fatalf("peer devices: %v", keys.DeviceKeys[peer])
	}
	device := keys.DeviceKeys[peer]["PEER00"]
	if ok, err := signatures.VerifySignatureJSON(device, peer, "PEER00", device.Keys.GetEd25519("PEER00")); !ok {
		t.Fatalf("device key signature: %v", err)
	}
	var claimed mautrix.RespClaimKeys
	call(t, s, "POST", "/_matrix/client/v3/keys/claim", mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{peer: {"PEER00": id.KeyAlgorithmSignedCurve25519}}}, &claimed)
	if len(claimed.OneTimeKeys[peer]["PEER00"]) != 1 {
		t.Fatalf("claimed: %v", claimed.OneTimeKeys)
	}
	var otk mautrix.OneTimeKey
	for _, k := range claimed.OneTimeKeys[peer]["PEER00"] {
		otk = k
	}
	if ok, err := signatures.VerifySignatureJSON(otk.RawData, peer, "PEER00", device.Keys.GetEd25519("PEER00")); !ok {
		t.Fatalf("one-time key signature: %v", err)
	}

	sender := crypto.NewOlmAccount()
	megolm, err := olm.NewOutboundGroupSession()
	if err != nil {
		t.Fatal(err)
	}
	olmSession, err := sender.Internal.NewOutboundSession(device.Keys.GetCurve25519("PEER00"), otk.Key)
	if err != nil {
		t.Fatal(err)
	}
	roomKey, _ := json.Marshal(map[string]any{"type": "m.room_key", "content": event.RoomKeyEventContent{
		Algorithm: id.AlgorithmMegolmV1, RoomID: id.RoomID(s.rooms[0]), SessionID: megolm.ID(), SessionKey: megolm.Key(),
	}})
	msgType, ciphertext, err := olmSession.Encrypt(roomKey)
	if err != nil {
		t.Fatal(err)
	}
	toDevice := &event.EncryptedEventContent{Algorithm: id.AlgorithmOlmV1, SenderKey: sender.IdentityKey(), OlmCiphertext: event.OlmCiphertexts{
		device.Keys.GetCurve25519("PEER00"): {Body: string(ciphertext), Type: msgType},
	}}
	call(t, s, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", map[string]any{"messages": map[id.UserID]any{peer: map[id.DeviceID]any{"PEER00": toDevice}}}, nil)

	plain, _ := json.Marshal(map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.text", "body": "hello"}})
	encrypted, err := megolm.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	content := &event.EncryptedEventContent{Algorithm: id.AlgorithmMegolmV1, SessionID: megolm.ID(), MegolmCiphertext: encrypted}
	call(t, s, "PUT", "/_matrix/client/v3/rooms/"+s.rooms[0]+"/send/m.room.encrypted/t2", content, nil)

	if err := s.e2ee.checkDecryptable(); err != nil {
		t.Fatal(err)
	}
	if s.e2ee.devicesWithKeys() != 1 || s.encryptedSends.Load() != 1 || len(s.unknownRequests()) != 0 {
		t.Fatalf("devices with keys %d, encrypted sends %d, unknown %v", s.e2ee.devicesWithKeys(), s.encryptedSends.Load(), s.unknownRequests())
	}
}
