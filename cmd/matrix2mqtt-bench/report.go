package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// latencies is a set of durations with the percentiles the report prints.
type latencies []time.Duration

func (l latencies) pct(p float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return ms(s[i])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// finite returns v, or nil (JSON null) when it is NaN or infinite: not measured.
func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// summary is the JSON form of a latency set, in milliseconds.
func (l latencies) summary() map[string]any {
	return map[string]any{"count": len(l), "p50_ms": finite(l.pct(50)), "p95_ms": finite(l.pct(95)), "p99_ms": finite(l.pct(99)), "max_ms": finite(l.pct(100))}
}

// row is one line of the table: a measure of the bridge, with the figure it is compared to
// (measured side by side in the same run) and their ratio, or a goal.
type row struct {
	Section   string  `json:"section"`
	Measure   string  `json:"measure"`
	Bridge    float64 `json:"bridge"`
	Reference float64 `json:"reference,omitempty"`
	RefName   string  `json:"reference_name,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	Goal      string  `json:"goal,omitempty"`
	Note      string  `json:"note,omitempty"`
}

// report collects rows, per-scenario details and skips, and prints them.
type report struct {
	Started  time.Time                 `json:"started"`
	Duration float64                   `json:"duration_s"`
	Machine  machine                   `json:"machine"`
	Settings map[string]any            `json:"settings"`
	Rows     []row                     `json:"rows"`
	Skipped  map[string]string         `json:"skipped,omitempty"`
	Details  map[string]map[string]any `json:"details"`
}

func newReport() *report {
	return &report{Started: time.Now(), Machine: readMachine(), Settings: map[string]any{}, Skipped: map[string]string{}, Details: map[string]map[string]any{}}
}

func (r *report) add(rw row) {
	if rw.Reference != 0 && rw.Ratio == 0 && !math.IsNaN(rw.Bridge) && !math.IsNaN(rw.Reference) {
		rw.Ratio = rw.Bridge / rw.Reference
	}
	r.Rows = append(r.Rows, rw)
}

func (r *report) detail(scenario, key string, v any) {
	if r.Details[scenario] == nil {
		r.Details[scenario] = map[string]any{}
	}
	r.Details[scenario][key] = v
}

func (r *report) skip(scenario, why string) {
	r.Skipped[scenario] = why
	r.Rows = append(r.Rows, row{Section: scenario, Measure: why, Bridge: math.NaN()})
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// printTable writes the rows as a Markdown table, which reads well in a terminal too.
func (r *report) printTable(w io.Writer) {
	cells := [][]string{{"scenario", "measure", "bridge", "reference", "ratio", "goal"}}
	for _, rw := range r.Rows {
		if math.IsNaN(rw.Bridge) && rw.Reference == 0 {
			cells = append(cells, []string{rw.Section, rw.Measure, "", "", "", ""})
			continue
		}
		ref, ratio := "", ""
		if rw.Reference != 0 || rw.RefName != "" {
			ref = num(rw.Reference)
			if rw.RefName != "" {
				ref += " (" + rw.RefName + ")"
			}
		}
		if rw.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f", rw.Ratio)
		}
		measure := rw.Measure
		if rw.Note != "" {
			measure += " [" + rw.Note + "]"
		}
		cells = append(cells, []string{rw.Section, measure, num(rw.Bridge), ref, ratio, rw.Goal})
	}
	widths := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	line := func(c []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, s := range c {
			pad := widths[i] - len([]rune(s))
			if i >= 2 && i <= 4 {
				b.WriteString(" " + strings.Repeat(" ", pad) + s + " |")
			} else {
				b.WriteString(" " + s + strings.Repeat(" ", pad) + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(cells[0])
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
		if i >= 2 && i <= 4 {
			sep[i] = strings.Repeat("-", n-1) + ":"
		}
	}
	line(sep)
	for _, c := range cells[1:] {
		line(c)
	}
}

func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// MarshalJSON writes NaN (not measured) as null.
func (rw row) MarshalJSON() ([]byte, error) {
	type plain row
	out := struct {
		plain
		Bridge    any `json:"bridge"`
		Reference any `json:"reference,omitempty"`
		Ratio     any `json:"ratio,omitempty"`
	}{plain: plain(rw), Bridge: finite(rw.Bridge)}
	if rw.Reference != 0 {
		out.Reference = finite(rw.Reference)
	}
	if rw.Ratio != 0 {
		out.Ratio = finite(rw.Ratio)
	}
	return json.Marshal(out)
}

// machine is what the figures were measured on.
type machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	MemoryMB int    `json:"memory_mb"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

func readMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
			}
		}
		m.MemoryMB = kb / 1024
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}
