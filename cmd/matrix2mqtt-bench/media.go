package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The media scenario's image: a camera-snapshot-sized JPEG of about 1 MB.
const (
	mediaWidth, mediaHeight = 1600, 1200
	mediaQuality            = 90
	mediaNoise              = 40 // ± per channel on a gradient: what makes it ~1 MB at this quality
)

// benchJPEG encodes a w×h gradient with per-channel noise from seed as a JPEG: the same bytes
// for the same arguments, so that runs send the same file.
func benchJPEG(w, h int, seed uint64) ([]byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	ch := func(v int) uint8 { return uint8(max(0, min(255, v+rng.IntN(2*mediaNoise+1)-mediaNoise))) }
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, color.RGBA{ch(x * 255 / w), ch(y * 255 / h), ch((x + y) * 255 / (w + h)), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: mediaQuality}); err != nil {
		return nil, fmt.Errorf("failed to encode the benchmark image: %w", err)
	}
	return buf.Bytes(), nil
}

// cryptoClient is a mautrix client with its own crypto device: the direct client of the media
// scenario, which encrypts the file and the event itself.
type cryptoClient struct {
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper
}

// newCryptoClient logs acc in as a new device with keys and tells its state store that the
// rooms are encrypted and who is in them (instead of a /sync), so that sends are encrypted for
// those members' devices.
func (b *bench) newCryptoClient(ctx context.Context, acc *account, name string, rooms []string, members []string) (*cryptoClient, error) {
	cli, err := mautrix.NewClient(b.hs, id.UserID(acc.userID), "")
	if err != nil {
		return nil, err
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: acc.userID},
		Password:                 acc.password,
		InitialDeviceDisplayName: "bench " + name,
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to log in the %s device: %w", name, err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("matrix2mqtt-bench"), filepath.Join(b.dir, "device-"+name+".db"))
	if err != nil {
		return nil, err
	}
	if err := helper.Init(ctx); err != nil {
		return nil, fmt.Errorf("failed to set up the %s device's keys: %w", name, err)
	}
	cli.Crypto = helper
	for _, room := range rooms {
		if err := cli.StateStore.SetEncryptionEvent(ctx, id.RoomID(room), &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}); err != nil {
			return nil, err
		}
		for _, m := range members {
			if err := cli.StateStore.SetMembership(ctx, id.RoomID(room), id.UserID(m), event.MembershipJoin); err != nil {
				return nil, err
			}
		}
	}
	return &cryptoClient{cli: cli, helper: helper}, nil
}

// upload encrypts data (mautrix crypto/attachment) and uploads it.
func (c *cryptoClient) upload(ctx context.Context, data []byte) (*event.EncryptedFileInfo, error) {
	file := attachment.NewEncryptedFile()
	up, err := c.cli.UploadBytes(ctx, file.Encrypt(data), "application/octet-stream")
	if err != nil {
		return nil, fmt.Errorf("failed to upload: %w", err)
	}
	return &event.EncryptedFileInfo{EncryptedFile: *file, URL: up.ContentURI.CUString()}, nil
}

// sendImage encrypts and uploads data and sends an encrypted m.image event referring to it:
// what a Matrix client does for a photo in an encrypted room. With thumbnail it first does the
// bridge's own image work (bridge/media.Describe: dimensions, blurhash, a JPEG thumbnail within
// MEDIA_THUMBNAIL_PX's default) and uploads the thumbnail too, as the bridge does.
func (c *cryptoClient) sendImage(ctx context.Context, room string, data []byte, thumbnail bool) (string, error) {
	info := &event.FileInfo{MimeType: "image/jpeg", Size: len(data), Width: mediaWidth, Height: mediaHeight}
	if thumbnail {
		f, werr := media.Describe(ctx, data, media.Given{Filename: "bench.jpg"}, 800)
		if werr != nil {
			return "", fmt.Errorf("failed to describe the image: %s", werr.Message)
		}
		th, err := c.upload(ctx, f.Thumbnail)
		if err != nil {
			return "", err
		}
		info.Width, info.Height, info.AnoaBlurhash = f.Width, f.Height, f.Blurhash
		info.ThumbnailFile = th
		info.ThumbnailInfo = &event.FileInfo{MimeType: "image/jpeg", Size: len(f.Thumbnail), Width: f.ThumbnailWidth, Height: f.ThumbnailHeight}
	}
	file, err := c.upload(ctx, data)
	if err != nil {
		return "", err
	}
	content := &event.MessageEventContent{MsgType: event.MsgImage, Body: "bench.jpg", FileName: "bench.jpg", Info: info, File: file}
	resp, err := c.cli.SendMessageEvent(ctx, id.RoomID(room), event.EventMessage, content)
	if err != nil {
		return "", fmt.Errorf("failed to send: %w", err)
	}
	return resp.EventID.String(), nil
}

// media is scenario 6: a ~1 MB JPEG to an encrypted room, as send_media with base64 data
// through the bridge, alternating one by one with a direct client (the bot on its own crypto
// device) that encrypts, uploads and sends the same file — once as is, once with the thumbnail
// and blurhash the bridge adds.
func (b *bench) media(ctx context.Context) error {
	if b.env == nil {
		b.rep.skip("6 media", "skipped: "+errNeedsStack.Error())
		return nil
	}
	img, err := benchJPEG(mediaWidth, mediaHeight, 1)
	if err != nil {
		return err
	}
	data := base64.StdEncoding.EncodeToString(img)
	bot, err := b.account(ctx, "mediabot")
	if err != nil {
		return err
	}
	env := b.bridgeEnv("media", b.hs, bot.userID, bot.password, filepath.Join(b.dir, "data-media"), map[string]string{
		"E2EE": "true", "E2EE_PICKLE_KEY": "matrix2mqtt-bench-pickle-key", "AUTO_JOIN": ":" + id.UserID(bot.userID).Homeserver(),
		"MEDIA_MAX_BYTES": fmt.Sprint(4 << 20),
	})
	r, err := b.startBridge("media", env)
	if err != nil {
		return err
	}
	defer b.closeBridge(r)
	if !r.info.E2EE.Enabled {
		return errE2EEOff
	}
	rec, err := b.newRecipient(ctx, "mediarecipient", 1)
	if err != nil {
		return err
	}
	defer rec.close()
	rooms, _, err := sharedRooms(ctx, rec.acc.cli, bot.cli, 1, "Benchmark media", true)
	if err != nil {
		return err
	}
	if _, err := waitRooms(r.mon, r.proc.started, 1, rooms, time.Minute); err != nil {
		return err
	}
	direct, err := b.newCryptoClient(ctx, bot, "mediadirect", rooms, []string{bot.userID, rec.acc.userID})
	if err != nil {
		return err
	}
	defer direct.helper.Close()
	w := startWatcher(rec.acc.cli)
	defer w.close()
	<-w.ready

	viaBridge := func() (time.Time, time.Time, string, error) {
		reqID := fmt.Sprintf("m%s-%d", b.tag, reqSeq.Add(1))
		payload, _ := json.Marshal(map[string]string{"id": reqID, "to": rooms[0], "data": data, "filename": "bench.jpg"})
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		t0, resp, err := r.mon.request(rctx, r.base+"/bridge/request/send_media", reqID, payload)
		if err == nil && resp.Status != "ok" {
			err = fmt.Errorf("%s", resp.Error)
		}
		return t0, resp.At, resp.EventID, err
	}
	viaDirect := func(thumbnail bool) func() (time.Time, time.Time, string, error) {
		return func() (time.Time, time.Time, string, error) {
			t0 := time.Now()
			evID, err := direct.sendImage(ctx, rooms[0], img, thumbnail)
			return t0, time.Now(), evID, err
		}
	}
	// The first of each creates and shares a Megolm session; not measured.
	var warm phase
	warm.merge(b.mediaPhase(w, viaBridge, 1))
	warm.merge(b.mediaPhase(w, viaDirect(false), 1))
	warm.merge(b.mediaPhase(w, viaDirect(true), 1))
	if warm.errors > 0 {
		return fmt.Errorf("warm-up: %d errors (first: %s)", warm.errors, warm.firstErr)
	}
	var bridged, ref, refThumb phase
	for range b.o.mediaN {
		bridged.merge(b.mediaPhase(w, viaBridge, 1))
		ref.merge(b.mediaPhase(w, viaDirect(false), 1))
		refThumb.merge(b.mediaPhase(w, viaDirect(true), 1))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, p := range []phase{bridged, ref, refThumb} {
		if p.errors > 0 {
			return fmt.Errorf("%d of %d images failed (first: %s)", p.errors, p.count, p.firstErr)
		}
		if p.types["m.room.encrypted"] != len(p.seen) {
			return fmt.Errorf("the recipient saw %v, not only m.room.encrypted", p.types)
		}
	}
	// The recipient's device decrypts the last image of each side.
	for _, evID := range []string{bridged.lastID, ref.lastID, refThumb.lastID} {
		if err := rec.decryptOne(ctx, rooms[0], evID); err != nil {
			return err
		}
	}
	sec := fmt.Sprintf("6 media, %d KB JPEG, encrypted", len(img)/1024)
	b.mediaRows(sec, bridged, ref, "direct, upload only")
	b.mediaRows(sec, bridged, refThumb, "direct, + thumbnail")
	b.rep.detail("media", "result", map[string]any{
		"bytes": len(img), "width": mediaWidth, "height": mediaHeight,
		"bridge": phaseJSON(bridged), "direct": phaseJSON(ref), "direct_thumbnail": phaseJSON(refThumb),
		"check": "the recipient's device decrypted an image of each side",
	})
	return nil
}

// mediaPhase sends count images one at a time with send and waits until the watcher saw them.
func (b *bench) mediaPhase(w *watcher, send func() (time.Time, time.Time, string, error), count int) phase {
	p := phase{count: count, types: map[string]int{}}
	var ids []string
	var t0s []time.Time
	for range count {
		t0, t1, evID, err := send()
		if err != nil {
			p.errors++
			if p.firstErr == "" {
				p.firstErr = shortErr(err)
			}
			continue
		}
		p.resp = append(p.resp, t1.Sub(t0))
		p.dur += t1.Sub(t0)
		ids, t0s = append(ids, evID), append(t0s, t0)
		p.lastID = evID
	}
	w.waitAll(ids, 30*time.Second)
	for i, evID := range ids {
		if ev, ok := w.get(evID); ok {
			p.seen = append(p.seen, ev.At.Sub(t0s[i]))
			p.seenDur += ev.At.Sub(t0s[i])
			p.types[ev.Type]++
		}
	}
	return p
}

// mediaRows adds the rows comparing the bridge to one reference of the media scenario; the
// rates are one image at a time, so they are 1 / the mean latency.
func (b *bench) mediaRows(sec string, a, ref phase, refName string) {
	b.rep.add(row{Section: sec, Measure: "images/s, publish → response", Bridge: a.rate(), Reference: ref.rate(), RefName: refName})
	b.rep.add(row{Section: sec, Measure: "images/s, publish → seen in /sync", Bridge: a.seenRate(), Reference: ref.seenRate(), RefName: refName})
	for _, p := range []float64{50, 95} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → response", p), Bridge: a.resp.pct(p), Reference: ref.resp.pct(p), RefName: refName})
	}
	for _, p := range []float64{50, 95} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → seen in /sync", p), Bridge: a.seen.pct(p), Reference: ref.seen.pct(p), RefName: refName})
	}
}
