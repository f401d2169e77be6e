package actions

import (
	"encoding/json"
	"testing"
)

func BenchmarkMessageContent(b *testing.B) {
	for _, c := range []struct {
		name string
		req  Send
	}{
		{"text", Send{Text: "Front door opened"}},
		{"markdown", Send{Markdown: "**Door** open at *12:00*, see [log](https://example.org)"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(c.req.Content()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
