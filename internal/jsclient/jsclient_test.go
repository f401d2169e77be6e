package jsclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/jsclient"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

var env *testenv.Env

// userSeq makes user IDs unique, so that the tests can run more than once (-count).
var userSeq atomic.Int64

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var err error
	env, err = testenv.Start(ctx, testenv.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// testLogWriter writes each line of the client's log to the test log.
type testLogWriter struct {
	t    *testing.T
	name string
}

func (w testLogWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("%s: %s", w.name, l)
	}
	return len(p), nil
}

// startUser registers localpart and starts a logged-in js client for it.
func startUser(t *testing.T, ctx context.Context, localpart string, autoJoin bool) (*jsclient.Client, *testenv.User) {
	t.Helper()
	return startUserWith(t, ctx, localpart, jsclient.LoginArgs{AutoJoin: autoJoin})
}

// startUserWith is startUser with more login options.
func startUserWith(t *testing.T, ctx context.Context, localpart string, args jsclient.LoginArgs) (*jsclient.Client, *testenv.User) {
	t.Helper()
	u, err := env.RegisterUser(ctx, fmt.Sprintf("%s%d", localpart, userSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	var stderr io.Writer = testLogWriter{t, localpart}
	t0 := time.Now()
	c, err := jsclient.Start(ctx, jsclient.Options{Stderr: stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s: close: %v", localpart, err)
		}
	})
	started := time.Since(t0)
	t0 = time.Now()
	args.Homeserver, args.UserID, args.Password = env.HomeserverURL, u.UserID, u.Password
	res, err := c.Login(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: process start %v, login (incl. first sync, key upload) %v %+v, device %s",
		localpart, started.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), res.TimingsMS, res.DeviceID)
	if res.DeviceID == "" || res.DeviceID == u.DeviceID {
		t.Fatalf("%s: login returned device %q (registration device %q)", localpart, res.DeviceID, u.DeviceID)
	}
	return c, u
}

// TestEncryptedConversation proves the harness in both directions without mautrix: two
// matrix-js-sdk clients with Rust crypto talk in an encrypted room on Dendrite.
func TestEncryptedConversation(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	alice, aliceUser := startUser(t, ctx, "alice", false)
	bob, bobUser := startUser(t, ctx, "bob", true)

	t0 := time.Now()
	cs, err := alice.BootstrapCrossSigning(ctx, aliceUser.Password)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice: cross-signing bootstrapped in %v: %+v", time.Since(t0).Round(time.Millisecond), cs)
	if !cs.Ready || cs.MasterKey == "" {
		t.Fatalf("alice's cross-signing is not ready: %+v", cs)
	}
	// Dendrite answers a keys/query whose database read failed (under load) with 200 and empty
	// maps, so bob asks again until alice's identity shows or the deadline passes.
	var id *jsclient.UserIdentity
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if id, err = bob.UserIdentity(ctx, aliceUser.UserID); err != nil {
			t.Fatal(err)
		}
		if id.HasIdentity && id.MasterKey == cs.MasterKey || time.Now().After(deadline) {
			break
		}
	}
	if !id.HasIdentity || id.MasterKey != cs.MasterKey {
		t.Fatalf("bob sees alice's identity as %+v, want master key %s", id, cs.MasterKey)
	}

	roomID, err := alice.CreateRoom(ctx, jsclient.CreateRoomArgs{
		Encrypted: true, Invite: []string{bobUser.UserID}, Name: "harness",
	})
	if err != nil {
		t.Fatal(err)
	}
	if enc, err := alice.RoomEncrypted(ctx, roomID); err != nil || !enc {
		t.Fatalf("alice: room encrypted = %v, %v", enc, err)
	}
	// Bob joins through auto_join.
	if enc, err := bob.WaitJoined(ctx, roomID); err != nil || !enc {
		t.Fatalf("bob: joined encrypted = %v, %v", enc, err)
	}
	if err := alice.WaitMember(ctx, roomID, bobUser.UserID, "join"); err != nil {
		t.Fatal(err)
	}

	t0 = time.Now()
	hello, err := alice.Send(ctx, jsclient.SendArgs{RoomID: roomID, Body: "hello bob", HTML: "<b>hello</b> bob"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := bob.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, EventID: hello})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bob: first decrypt %v after alice's send: %+v", time.Since(t0).Round(time.Millisecond), ev)
	if !ev.Encrypted || ev.WireType != "m.room.encrypted" || ev.Type != "m.room.message" || ev.Body() != "hello bob" {
		t.Fatalf("bob got %+v", ev)
	}
	if ev.Sender != aliceUser.UserID || ev.SenderDevice != alice.DeviceID() {
		t.Fatalf("bob: sender %s/%s, want %s/%s", ev.Sender, ev.SenderDevice, aliceUser.UserID, alice.DeviceID())
	}
	if ev.Content["formatted_body"] != "<b>hello</b> bob" {
		t.Fatalf("bob: formatted_body = %v", ev.Content["formatted_body"])
	}
	// Alice is cross-signed; bob has not verified her identity.
	if ev.SenderDeviceStatus == nil || !ev.SenderDeviceStatus.SignedByOwner {
		t.Fatalf("bob: alice's device status %+v, want signed by owner", ev.SenderDeviceStatus)
	}

	t0 = time.Now()
	reply, err := bob.Send(ctx, jsclient.SendArgs{RoomID: roomID, Body: "hi alice", ReplyTo: hello})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = alice.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, Body: "hi alice", Sender: bobUser.UserID})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice: decrypted bob's reply %v after his send", time.Since(t0).Round(time.Millisecond))
	if ev.EventID != reply || !ev.Encrypted || ev.SenderDevice != bob.DeviceID() {
		t.Fatalf("alice got %+v, want %s from %s", ev, reply, bob.DeviceID())
	}
	rel, _ := ev.Content["m.relates_to"].(map[string]any)
	inReply, _ := rel["m.in_reply_to"].(map[string]any)
	if inReply["event_id"] != hello {
		t.Fatalf("alice: reply relation %v, want in reply to %s", rel, hello)
	}

	// Bob's device is not cross-signed yet; after bob bootstraps it is signed by its owner.
	st, err := alice.DeviceStatus(ctx, bobUser.UserID, bob.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Known || st.Device.SignedByOwner {
		t.Fatalf("alice sees bob's device before cross-signing as %+v", st)
	}
	if _, err := bob.BootstrapCrossSigning(ctx, bobUser.Password); err != nil {
		t.Fatal(err)
	}
	st, err = alice.WaitDeviceSignedByOwner(ctx, bobUser.UserID, bob.DeviceID(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Device.SignedByOwner || st.Device.CrossSigningVerified || st.User.IsCrossSigningVerified {
		t.Fatalf("alice sees bob's cross-signed device as %+v (alice has not verified bob)", st)
	}

	// Reactions, edits and redactions arrive decrypted too.
	react, err := bob.React(ctx, roomID, hello, "👍")
	if err != nil {
		t.Fatal(err)
	}
	ev, err = alice.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, EventID: react})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "m.reaction" {
		t.Fatalf("alice: reaction event %+v", ev)
	}
	edit, err := alice.Send(ctx, jsclient.SendArgs{RoomID: roomID, Body: "hello bob!", Edit: hello})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = bob.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, EventID: edit})
	if err != nil {
		t.Fatal(err)
	}
	if nc, _ := ev.Content["m.new_content"].(map[string]any); nc["body"] != "hello bob!" {
		t.Fatalf("bob: edit %+v", ev)
	}
	redaction, err := alice.Redact(ctx, roomID, hello, "test")
	if err != nil {
		t.Fatal(err)
	}
	ev, err = bob.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, EventID: hello, Redacted: true})
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Redacted {
		t.Fatalf("bob: %s not redacted by %s", hello, redaction)
	}

	// A wait that cannot succeed times out with the client's explanation.
	_, err = bob.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, Body: "never sent", Timeout: 300 * time.Millisecond})
	if !jsclient.IsTimeout(err) {
		t.Fatalf("waiting for a message never sent: %v, want a timeout", err)
	}
}

// TestSecondDevice logs a second device of a cross-signed user in as a separate process;
// it imports the cross-signing keys from secret storage and signs itself.
func TestSecondDevice(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	first, u := startUser(t, ctx, "carol", false)
	if _, err := first.BootstrapCrossSigning(ctx, u.Password); err != nil {
		t.Fatal(err)
	}
	key, err := first.BootstrapSecretStorage(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if key == "" {
		t.Fatal("no recovery key")
	}

	second, err := jsclient.Start(ctx, jsclient.Options{Stderr: testLogWriter{t, "carol2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Login(ctx, jsclient.LoginArgs{
		Homeserver: env.HomeserverURL, UserID: u.UserID, Password: u.Password, RecoveryKey: key,
	}); err != nil {
		t.Fatal(err)
	}
	if second.DeviceID() == first.DeviceID() {
		t.Fatalf("both processes got device %s", first.DeviceID())
	}
	if _, err := second.CrossSigningFromSecretStorage(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := first.WaitDeviceSignedByOwner(ctx, u.UserID, second.DeviceID(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Both devices belong to the same, trusted identity.
	if !st.Device.SignedByOwner || !st.Device.CrossSigningVerified || !st.Device.IsVerified {
		t.Fatalf("the first device sees the second as %+v", st.Device)
	}
}

// TestVerification runs interactive SAS verifications between two js clients, to-device and
// in a DM, and the non-interactive TrustUser.
func TestVerification(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	dave, daveUser := startUser(t, ctx, "dave", false)
	erin, erinUser := startUserWith(t, ctx, "erin", jsclient.LoginArgs{AutoJoin: true, AcceptVerifications: true})
	frank, frankUser := startUser(t, ctx, "frank", true)
	for _, p := range []struct {
		c *jsclient.Client
		u *testenv.User
	}{{dave, daveUser}, {erin, erinUser}, {frank, frankUser}} {
		if _, err := p.c.BootstrapCrossSigning(ctx, p.u.Password); err != nil {
			t.Fatal(err)
		}
	}

	// They share a DM: the Rust crypto only tracks the devices of users it shares a room
	// with, and ignores verification requests from devices it does not know.
	roomID, err := dave.CreateRoom(ctx, jsclient.CreateRoomArgs{Encrypted: true, IsDirect: true, Invite: []string{erinUser.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if err := dave.WaitMember(ctx, roomID, erinUser.UserID, "join"); err != nil {
		t.Fatal(err)
	}

	// Each must know the other's device first: the Rust crypto ignores a verification
	// request from a device it has not downloaded yet. DeviceStatus fetches the keys.
	for _, p := range []struct {
		c            *jsclient.Client
		user, device string
	}{{dave, erinUser.UserID, erin.DeviceID()}, {erin, daveUser.UserID, dave.DeviceID()}} {
		if st, err := p.c.DeviceStatus(ctx, p.user, p.device); err != nil || !st.Known {
			t.Fatalf("%s/%s: %+v, %v", p.user, p.device, st, err)
		}
	}

	// To-device SAS: dave verifies erin's device, and through it her identity.
	t0 := time.Now()
	vctx, vcancel := context.WithTimeout(ctx, 30*time.Second)
	defer vcancel()
	v, err := dave.VerifyDevice(vctx, erinUser.UserID, erin.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dave verified erin's device in %v: %+v, device %+v", time.Since(t0).Round(time.Millisecond), v, v.DeviceStatus)
	if !v.Done || len(v.Emoji) != 7 || v.DeviceStatus == nil || !v.DeviceStatus.IsVerified || !v.UserCrossSigningVerified {
		t.Fatalf("dave's verification of erin: %+v", v)
	}
	theirs, err := erin.Verifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(theirs) != 1 || !theirs[0].Done || strings.Join(theirs[0].Emoji, " ") != strings.Join(v.Emoji, " ") {
		t.Fatalf("erin's side: %+v, dave's emoji %v", theirs, v.Emoji)
	}

	// In-room SAS from the DM, as Element does it.
	v, err = dave.VerifyUser(vctx, erinUser.UserID, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Done || !v.UserCrossSigningVerified {
		t.Fatalf("dave's in-room verification of erin: %+v", v)
	}

	// Without SAS: dave trusts frank's identity; frank's cross-signed device is then verified.
	st, err := dave.DeviceStatus(ctx, frankUser.UserID, frank.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	if st.Device.IsVerified || st.User.IsCrossSigningVerified {
		t.Fatalf("dave sees frank as verified before trusting him: %+v", st)
	}
	if err := dave.TrustUser(ctx, frankUser.UserID); err != nil {
		t.Fatal(err)
	}
	st, err = dave.DeviceStatus(ctx, frankUser.UserID, frank.DeviceID())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Device.IsVerified || !st.Device.CrossSigningVerified || !st.User.IsCrossSigningVerified {
		t.Fatalf("dave sees frank after trusting him as %+v", st)
	}
	// Messages from frank now carry no shield for dave.
	roomID, err = dave.CreateRoom(ctx, jsclient.CreateRoomArgs{Encrypted: true, Invite: []string{frankUser.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := frank.WaitJoined(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	id, err := frank.SendText(ctx, roomID, "trusted")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := dave.WaitEvent(ctx, jsclient.EventFilter{RoomID: roomID, EventID: id})
	if err != nil {
		t.Fatal(err)
	}
	if ev.ShieldColour != "NONE" || ev.SenderDeviceStatus == nil || !ev.SenderDeviceStatus.IsVerified {
		t.Fatalf("frank's message as dave sees it: shield %s/%s, device %+v", ev.ShieldColour, ev.ShieldReason, ev.SenderDeviceStatus)
	}
}

func TestErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := jsclient.Start(ctx, jsclient.Options{Stderr: testLogWriter{t, "errors"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var jerr *jsclient.Error
	if err := c.Call(ctx, "no_such_command", nil, nil); !errors.As(err, &jerr) || jerr.Code != "unknown_command" {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := c.SendText(ctx, "!x:localhost", "hi"); !errors.As(err, &jerr) || jerr.Code != "not_logged_in" {
		t.Fatalf("send before login: %v", err)
	}
	_, err = c.Login(ctx, jsclient.LoginArgs{Homeserver: env.HomeserverURL, UserID: "@nobody:localhost", Password: "x"})
	if code := jsclient.MatrixErrcode(err); code != "M_FORBIDDEN" {
		t.Fatalf("login with a wrong password: %v (errcode %q)", err, code)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Exited():
	default:
		t.Fatal("the process is still running after Close")
	}
	if err := c.Call(ctx, "ping", nil, nil); err == nil {
		t.Fatal("call after Close succeeded")
	}
}
