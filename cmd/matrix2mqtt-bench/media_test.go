package main

import (
	"bytes"
	"image/jpeg"
	"testing"
)

// TestBenchJPEG checks that the media scenario's image is a decodable ~1 MB JPEG of the stated
// size, the same for the same seed and different for another.
func TestBenchJPEG(t *testing.T) {
	img, err := benchJPEG(mediaWidth, mediaHeight, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(img) < 900<<10 || len(img) > 1200<<10 {
		t.Fatalf("%d bytes, want about 1 MB", len(img))
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != mediaWidth || cfg.Height != mediaHeight {
		t.Fatalf("%dx%d", cfg.Width, cfg.Height)
	}
	again, _ := benchJPEG(mediaWidth, mediaHeight, 1)
	other, _ := benchJPEG(mediaWidth, mediaHeight, 2)
	if !bytes.Equal(img, again) || bytes.Equal(img, other) {
		t.Fatal("not deterministic per seed")
	}
}
