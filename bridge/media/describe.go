package media

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"mime"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	// Decoders for image.DecodeConfig and image.Decode.
	_ "image/gif"
	_ "image/png"

	"github.com/buckket/go-blurhash"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// maxPixels bounds the images that are decoded for a thumbnail (a decompression bomb would
// take gigabytes).
const maxPixels = 64 << 20

// decoding bounds the images and videos decoded at once, across every lane and room: each
// takes a core, and a large image hundreds of megabytes.
var decoding = make(chan struct{}, runtime.GOMAXPROCS(0))

// blurhashPx is the size of the image the blurhash is computed from.
const blurhashPx = 64

// Kinds are the values of `kind`.
var Kinds = []string{"image", "video", "audio", "voice", "file"}

// File is what a message says about its file.
type File struct {
	Kind     string
	Mimetype string
	Filename string
	Size     int
	Width    int
	Height   int
	// DurationMS is a video's duration from ffprobe (0: unknown).
	DurationMS int
	Blurhash   string
	// Thumbnail is a JPEG of an image larger than MEDIA_THUMBNAIL_PX, or of a video's frame;
	// nil otherwise.
	Thumbnail       []byte
	ThumbnailWidth  int
	ThumbnailHeight int
}

// Given is what a request says about its file; Describe finds out the rest.
type Given struct {
	Kind, Mimetype, Filename string
	// Thumbnail is a picture (PNG, JPEG, GIF, WebP) to show instead of one made from the file:
	// a camera's snapshot for its clip, or any video's when ffmpeg is not at hand.
	Thumbnail []byte
}

// Describe finds out what data is: its mimetype (given, else sniffed, else from the filename's
// extension), its kind (given, else from the mimetype), a filename with the right extension,
// for images the dimensions, a blurhash and a thumbnail when larger than thumbPx, and for videos
// the dimensions, duration, blurhash and thumbnail when ffprobe and ffmpeg are on PATH. A given
// thumbnail is fitted into thumbPx and takes the place of the one made from the file. Only as
// many images and videos as there are cores are decoded at once; the others wait their turn.
func Describe(ctx context.Context, data []byte, given Given, thumbPx int) (File, *wire.Error) {
	f := File{Kind: given.Kind, Mimetype: given.Mimetype, Size: len(data)}
	if f.Mimetype == "" {
		f.Mimetype = sniff(data, given.Filename)
	}
	if f.Kind == "" {
		f.Kind = kindOf(f.Mimetype)
	}
	if !slices.Contains(Kinds, f.Kind) {
		return f, wire.Errorf(wire.CodeInvalidRequest, "field 'kind' must be one of %s, not %q", strings.Join(Kinds, ", "), f.Kind)
	}
	if (f.Kind == "audio" || f.Kind == "voice") && f.Mimetype == "application/ogg" {
		f.Mimetype = "audio/ogg" // what the sniffer calls any Ogg; clients play audio/ogg
	}
	f.Filename = nameWithExtension(given.Filename, f.Kind, f.Mimetype)
	if f.Kind != "image" && f.Kind != "video" && given.Thumbnail == nil {
		return f, nil
	}
	select {
	case decoding <- struct{}{}:
		defer func() { <-decoding }()
	case <-ctx.Done():
		return f, nil // the caller's send fails on the same context
	}
	makeThumbnail := given.Thumbnail == nil
	switch f.Kind {
	case "image":
		describeImage(&f, data, thumbPx, makeThumbnail)
	case "video":
		describeVideo(ctx, &f, data, thumbPx, makeThumbnail)
	}
	if !makeThumbnail {
		img, err := decodeImage(given.Thumbnail)
		if err != nil {
			return f, thumbnailError(err)
		}
		thumbnail(&f, img, thumbPx, true)
	}
	return f, nil
}

// CheckThumbnail tells whether data is a picture Describe takes as a thumbnail, from its header.
func CheckThumbnail(data []byte) *wire.Error {
	if _, err := checkImage(data); err != nil {
		return thumbnailError(err)
	}
	return nil
}

// thumbnailError is the answer to a given thumbnail that is not a picture Describe takes.
func thumbnailError(err error) *wire.Error {
	return wire.Errorf(wire.CodeInvalidRequest, "field 'thumbnail' must be a PNG, JPEG, GIF or WebP image of at most %d pixels: %v", maxPixels, err)
}

// checkImage reads the header of an image (its size, also when it refuses it) and refuses one
// over maxPixels.
func checkImage(data []byte) (image.Config, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return cfg, fmt.Errorf("failed to read the image header: %w", err)
	}
	if cfg.Width*cfg.Height > maxPixels || cfg.Width == 0 || cfg.Height == 0 {
		return cfg, fmt.Errorf("it is %d×%d pixels", cfg.Width, cfg.Height)
	}
	return cfg, nil
}

// decodeImage decodes data whose header says it is an image of at most maxPixels.
func decodeImage(data []byte) (image.Image, error) {
	if _, err := checkImage(data); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to decode the image: %w", err)
	}
	return img, nil
}

// sniff finds the mimetype from the content (the WHATWG algorithm of net/http), and from the
// filename's extension when the content says nothing specific.
func sniff(data []byte, filename string) string {
	sniffed, _, _ := strings.Cut(http.DetectContentType(data), ";")
	if sniffed != "application/octet-stream" && sniffed != "text/plain" {
		return sniffed
	}
	if byExt, _, _ := strings.Cut(mime.TypeByExtension(filepath.Ext(filename)), ";"); byExt != "" {
		return byExt
	}
	if sniffed == "text/plain" {
		return "text/plain"
	}
	return "application/octet-stream"
}

func kindOf(mimetype string) string {
	major, _, _ := strings.Cut(mimetype, "/")
	switch major {
	case "image", "video", "audio":
		return major
	}
	return "file"
}

// nameWithExtension keeps a given filename that has an extension, adds the mimetype's extension
// to one without, and makes one from the kind when none is given.
func nameWithExtension(filename, kind, mimetype string) string {
	filename = filepath.Base(strings.ReplaceAll(filename, "\\", "/"))
	if filename == "." || filename == "/" {
		filename = ""
	}
	if filename != "" && filepath.Ext(filename) != "" {
		return filename
	}
	if filename == "" {
		filename = kind
	}
	return filename + extension(mimetype)
}

// extension is the usual extension of mimetype ("" when it has none).
func extension(mimetype string) string {
	exts, _ := mime.ExtensionsByType(mimetype)
	for _, common := range []string{".jpg", ".png", ".gif", ".webp", ".mp4", ".ogg", ".mp3", ".pdf", ".txt"} {
		if slices.Contains(exts, common) {
			return common
		}
	}
	if len(exts) > 0 {
		return exts[0]
	}
	return ""
}

// describeImage fills the dimensions, and when it can decode the image and makeThumbnail is
// set, the blurhash and the thumbnail. An image it cannot decode is still sent, without them.
func describeImage(f *File, data []byte, thumbPx int, makeThumbnail bool) {
	cfg, err := checkImage(data)
	f.Width, f.Height = cfg.Width, cfg.Height // 0×0 when the header cannot be read
	if err != nil || !makeThumbnail {
		return
	}
	if img, _, err := image.Decode(bytes.NewReader(data)); err == nil {
		thumbnail(f, img, thumbPx, false)
	}
}

// thumbnail sets the blurhash of img and, when img is larger than thumbPx or always is set, a
// JPEG thumbnail of it that fits in thumbPx×thumbPx.
func thumbnail(f *File, img image.Image, thumbPx int, always bool) {
	if hash, err := blurhash.Encode(4, 3, scale(img, blurhashPx)); err == nil {
		f.Blurhash = hash
	}
	if b := img.Bounds(); !always && b.Dx() <= thumbPx && b.Dy() <= thumbPx {
		return
	}
	thumb := scale(img, thumbPx)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, thumb, &jpeg.Options{Quality: 80}); err != nil {
		return
	}
	f.Thumbnail = buf.Bytes()
	f.ThumbnailWidth, f.ThumbnailHeight = thumb.Bounds().Dx(), thumb.Bounds().Dy()
}

// scale fits img into px×px, keeping its aspect ratio.
func scale(img image.Image, px int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= px && h <= px {
		return img
	}
	if w >= h {
		w, h = px, max(1, h*px/w)
	} else {
		w, h = max(1, w*px/h), px
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	return dst
}
