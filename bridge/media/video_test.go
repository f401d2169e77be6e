package media

import (
	"bytes"
	"context"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

func TestParseProbe(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want probe
		err  bool
	}{
		{"mp4", `{"programs":[],"streams":[{"width":320,"height":240,"duration":"2.000000"}],"format":{"duration":"2.016000"}}`, probe{320, 240, 2000}, false},
		{"stream without duration (webm)", `{"streams":[{"width":1920,"height":1080}],"format":{"duration":"12.3456"}}`, probe{1920, 1080, 12346}, false},
		{"duration N/A", `{"streams":[{"width":640,"height":480,"duration":"N/A"}],"format":{"duration":"1.5"}}`, probe{640, 480, 1500}, false},
		{"no video stream", `{"streams":[],"format":{"duration":"3"}}`, probe{0, 0, 3000}, false},
		{"nothing known", `{}`, probe{}, false},
		{"negative size and duration", `{"streams":[{"width":-1,"height":240,"duration":"-2"}],"format":{}}`, probe{}, false},
		{"zero height", `{"streams":[{"width":320,"height":0}]}`, probe{}, false},
		{"huge size", `{"streams":[{"width":9999999999,"height":2}]}`, probe{}, false},
		{"duration over a day", `{"format":{"duration":"1e12"}}`, probe{}, false},
		{"duration not a number", `{"format":{"duration":"NaN"}}`, probe{}, false},
		{"portrait phone clip (display matrix)", `{"streams":[{"width":1920,"height":1080,"duration":"3.0","side_data_list":[{"rotation":-90}]}]}`, probe{1080, 1920, 3000}, false},
		{"rotate tag of older ffmpeg", `{"streams":[{"width":640,"height":480,"tags":{"rotate":"270"}}]}`, probe{480, 640, 0}, false},
		{"upside down", `{"streams":[{"width":640,"height":480,"side_data_list":[{"rotation":180}]}]}`, probe{640, 480, 0}, false},
		{"side data without rotation", `{"streams":[{"width":640,"height":480,"side_data_list":[{}]}]}`, probe{640, 480, 0}, false},
		{"not json", `Invalid data found when processing input`, probe{}, true},
		{"width as a string", `{"streams":[{"width":"320"}]}`, probe{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProbe([]byte(tc.out))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("parseProbe = %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParseProbe(f *testing.F) {
	f.Add([]byte(`{"streams":[{"width":320,"height":240,"duration":"2.000000"}],"format":{"duration":"2.016000"}}`))
	f.Add([]byte(`{"streams":[],"format":{"duration":"N/A"}}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		p, err := parseProbe(out)
		if err != nil {
			return
		}
		if p.Width < 0 || p.Height < 0 || (p.Width == 0) != (p.Height == 0) || p.DurationMS < 0 || p.DurationMS > maxVideoDurationMS {
			t.Fatalf("parseProbe(%q) = %+v", out, p)
		}
	})
}

// testVideo makes a w×h MP4 of secs seconds.
func testVideo(t *testing.T, w, h, secs int) []byte {
	t.Helper()
	data, err := testenv.Video(t.TempDir(), w, h, secs)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rotated is clip with a display matrix that turns it a quarter turn, as a phone stores a
// portrait clip.
func rotated(t *testing.T, clip []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.mp4"), filepath.Join(dir, "out.mp4")
	if err := os.WriteFile(in, clip, 0o600); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command("ffmpeg", "-v", "error", "-i", in, "-c", "copy", "-metadata:s:v:0", "rotate=90", out).CombinedOutput(); err != nil {
		t.Fatalf("failed to rotate the clip: %v: %s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDescribeVideo(t *testing.T) {
	clip := testVideo(t, 1280, 720, 2)
	small := testVideo(t, 160, 120, 1)
	local := filepath.Join(t.TempDir(), "local.mp4")
	if err := os.WriteFile(local, small, 0o600); err != nil {
		t.Fatal(err)
	}
	playlist := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://" + local + "\n#EXT-X-ENDLIST\n")
	for _, tc := range []struct {
		name           string
		data           []byte
		path           string // PATH; "" keeps the machine's
		wantW, wantH   int
		wantDurationMS int
		wantThumbW     int
	}{
		{"with ffprobe and ffmpeg", clip, "", 1280, 720, 2000, 320},
		{"smaller than the thumbnail", small, "", 160, 120, 1000, 160},
		{"portrait, rotated a quarter turn", rotated(t, small), "", 120, 160, 1000, 120},
		{"without them", clip, t.TempDir(), 0, 0, 0, 0},
		{"not a video", []byte("not a video at all"), "", 0, 0, 0, 0},
		{"a playlist naming a local video", playlist, "", 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path != "" {
				t.Setenv("PATH", tc.path)
			}
			f, werr := Describe(context.Background(), tc.data, Given{Mimetype: "video/mp4"}, 320)
			if werr != nil {
				t.Fatal(werr)
			}
			if f.Kind != "video" || f.Filename != "video.mp4" || f.Width != tc.wantW || f.Height != tc.wantH || f.DurationMS != tc.wantDurationMS || f.ThumbnailWidth != tc.wantThumbW {
				t.Fatalf("got %+v", f)
			}
			if tc.wantThumbW == 0 {
				if f.Thumbnail != nil || f.Blurhash != "" {
					t.Fatalf("a thumbnail without the tools: %+v", f)
				}
				return
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(f.Thumbnail))
			if err != nil || cfg.Width != tc.wantThumbW || cfg.Height != f.ThumbnailHeight || cfg.Height != tc.wantThumbW*tc.wantH/tc.wantW || f.Blurhash == "" {
				t.Fatalf("thumbnail %+v, %v; file %+v", cfg, err, f)
			}
		})
	}
}

// TestDescribeGivenThumbnail: a thumbnail given with the request is fitted into the thumbnail
// size and replaces the one the bridge would make (ffmpeg's frame is not even grabbed), for any
// kind; one that is not a readable image of a sane size is refused.
func TestDescribeGivenThumbnail(t *testing.T) {
	clip := testVideo(t, 1280, 720, 1)
	var wide, square, bigImage, huge bytes.Buffer
	_ = png.Encode(&wide, testImage(640, 320))
	_ = png.Encode(&square, testImage(100, 100))
	_ = png.Encode(&bigImage, testImage(1000, 500))
	_ = gif.Encode(&huge, testImage(4, 4), nil)
	hugeHeader := slices.Clone(huge.Bytes())
	hugeHeader[6], hugeHeader[7], hugeHeader[8], hugeHeader[9] = 0xff, 0xff, 0xff, 0xff // 65535×65535
	for _, tc := range []struct {
		name                   string
		data, thumb            []byte
		given                  Given
		path                   string // PATH; "" keeps the machine's
		wantW, wantH           int
		wantThumbW, wantThumbH int
		code                   string
	}{
		{"video with ffmpeg", clip, wide.Bytes(), Given{Mimetype: "video/mp4"}, "", 1280, 720, 320, 160, ""},
		{"video without ffmpeg", clip, wide.Bytes(), Given{Mimetype: "video/mp4"}, t.TempDir(), 0, 0, 320, 160, ""},
		{"image", bigImage.Bytes(), square.Bytes(), Given{}, "", 1000, 500, 100, 100, ""},
		{"file", []byte("%PDF-1.7 ..."), square.Bytes(), Given{}, "", 0, 0, 100, 100, ""},
		{"not an image", clip, []byte("not a picture"), Given{Mimetype: "video/mp4"}, "", 0, 0, 0, 0, "invalid_request"},
		{"too many pixels", clip, hugeHeader, Given{Mimetype: "video/mp4"}, "", 0, 0, 0, 0, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path != "" {
				t.Setenv("PATH", tc.path)
			}
			tc.given.Thumbnail = tc.thumb
			f, werr := Describe(context.Background(), tc.data, tc.given, 320)
			if tc.code != "" {
				if werr == nil || werr.Code != tc.code || CheckThumbnail(tc.thumb) == nil {
					t.Fatalf("got %v, want %s (from Describe and CheckThumbnail)", werr, tc.code)
				}
				return
			}
			if werr != nil || CheckThumbnail(tc.thumb) != nil {
				t.Fatal(werr, CheckThumbnail(tc.thumb))
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(f.Thumbnail))
			if f.Width != tc.wantW || f.Height != tc.wantH || err != nil || cfg.Width != tc.wantThumbW || cfg.Height != tc.wantThumbH ||
				f.ThumbnailWidth != tc.wantThumbW || f.ThumbnailHeight != tc.wantThumbH || f.Blurhash == "" {
				t.Fatalf("thumbnail %+v, %v; file %+v", cfg, err, f)
			}
		})
	}
}
