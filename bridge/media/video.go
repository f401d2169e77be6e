package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// probeTimeout bounds one run of ffprobe or ffmpeg.
const probeTimeout = 20 * time.Second

// maxVideoDurationMS is the longest duration taken from ffprobe (a day); a longer one is
// treated as unknown.
const maxVideoDurationMS = 24 * 3600 * 1000

// probe is what ffprobe says about a video's first video stream.
type probe struct {
	Width, Height, DurationMS int
}

// probeEntries are the entries parseProbe reads.
const probeEntries = "stream=width,height,duration:stream_tags=rotate:stream_side_data=rotation:format=duration"

// parseProbe reads the JSON of `ffprobe -of json -show_entries` probeEntries: the first stream's
// dimensions as shown (swapped when the stream is rotated a quarter turn, as a phone's portrait
// clip is, and as ffmpeg turns its frames), and its duration (else the container's) in
// milliseconds. A value that is missing, negative or out of range is left 0.
func parseProbe(out []byte) (probe, error) {
	var doc struct {
		Streams []struct {
			Width    int    `json:"width"`
			Height   int    `json:"height"`
			Duration string `json:"duration"`
			Tags     struct {
				Rotate string `json:"rotate"`
			} `json:"tags"`
			SideData []struct {
				Rotation float64 `json:"rotation"`
			} `json:"side_data_list"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return probe{}, fmt.Errorf("failed to read ffprobe's output: %w", err)
	}
	var p probe
	duration := doc.Format.Duration
	if len(doc.Streams) > 0 {
		s := doc.Streams[0]
		if s.Width > 0 && s.Height > 0 && s.Width <= math.MaxInt32 && s.Height <= math.MaxInt32 {
			p.Width, p.Height = s.Width, s.Height
			rotation, _ := strconv.ParseFloat(s.Tags.Rotate, 64) // ffmpeg before 6 also says it here
			for _, d := range s.SideData {
				if d.Rotation != 0 {
					rotation = d.Rotation
				}
			}
			if quarter := math.Mod(math.Abs(rotation), 180); quarter == 90 {
				p.Width, p.Height = p.Height, p.Width
			}
		}
		if s.Duration != "" && s.Duration != "N/A" {
			duration = s.Duration
		}
	}
	if secs, err := strconv.ParseFloat(duration, 64); err == nil && secs > 0 && secs*1000 <= maxVideoDurationMS {
		p.DurationMS = int(math.Round(secs * 1000))
	}
	return p, nil
}

// safeInput are the options that keep ffprobe and ffmpeg to reading the one file as a video
// container: the bytes come from whoever sent them, and a playlist (HLS, concat) in their place
// would have the tools open other local files or URLs.
var safeInput = []string{"-protocol_whitelist", "file", "-format_whitelist", "mov,matroska,avi,mpegts,ogg,flv"}

// describeVideo fills the dimensions and duration from ffprobe, and the thumbnail and blurhash
// from a frame that ffmpeg grabs (when makeThumbnail is set), each when its tool is on PATH. A
// video they cannot read is still sent, without them.
func describeVideo(ctx context.Context, f *File, data []byte, thumbPx int, makeThumbnail bool) {
	ffprobe, probeErr := exec.LookPath("ffprobe")
	ffmpeg, ffmpegErr := exec.LookPath("ffmpeg")
	if !makeThumbnail {
		ffmpegErr = exec.ErrNotFound
	}
	if probeErr != nil && ffmpegErr != nil {
		return
	}
	log := zerolog.Ctx(ctx)
	tmp, err := os.CreateTemp("", "matrix2mqtt-video-*")
	if err != nil {
		log.Warn().Err(err).Msg("Sending a video without its dimensions and thumbnail")
		return
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		log.Warn().Err(err).Msg("Sending a video without its dimensions and thumbnail")
		return
	}
	if probeErr == nil {
		out, err := runTool(ctx, ffprobe, slices.Concat(safeInput, []string{"-v", "error", "-select_streams", "v:0",
			"-show_entries", probeEntries, "-of", "json", tmp.Name()})...)
		var p probe
		if err == nil {
			p, err = parseProbe(out)
		}
		if err != nil {
			log.Warn().Err(err).Msg("Sending a video without its dimensions and duration")
		}
		f.Width, f.Height, f.DurationMS = p.Width, p.Height, p.DurationMS
	}
	if ffmpegErr == nil {
		// One frame, a second in when the video is that long, fitted in thumbPx×thumbPx (never
		// enlarged) by ffmpeg so that a large video is never decoded here at full size.
		seek := "0"
		if f.DurationMS >= 2000 {
			seek = "1"
		}
		fit := fmt.Sprintf(`scale=w=min(iw\,%d):h=min(ih\,%d):force_original_aspect_ratio=decrease`, thumbPx, thumbPx)
		out, err := runTool(ctx, ffmpeg, slices.Concat(safeInput, []string{"-v", "error", "-nostdin", "-ss", seek, "-i", tmp.Name(),
			"-frames:v", "1", "-vf", fit, "-f", "image2pipe", "-c:v", "png", "pipe:1"})...)
		var frame image.Image
		if err == nil {
			frame, _, err = image.Decode(bytes.NewReader(out))
		}
		if err != nil {
			log.Warn().Err(err).Msg("Sending a video without its thumbnail")
			return
		}
		thumbnail(f, frame, thumbPx, true)
	}
}

// runTool runs an ffmpeg tool with probeTimeout and returns its standard output.
func runTool(ctx context.Context, path string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("failed to run %s: %w: %.300s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
