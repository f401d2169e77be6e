package bridge

import (
	"bytes"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchitectureNamesEveryPackage keeps docs/architecture.md's package map complete: every
// directory with Go code (tests and node_modules aside) is named there, and no package grows
// past its size limit.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]int{} // package directory → non-test lines of Go
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			dirs[filepath.ToSlash(filepath.Dir(strings.TrimPrefix(path, "../")))] += bytes.Count(src, []byte("\n"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, lines := range dirs {
		if !strings.Contains(string(doc), "`"+dir+"`") {
			t.Errorf("docs/architecture.md does not name the package %s", dir)
		}
		if limit := packageLineLimit(dir); lines > limit {
			t.Errorf("package %s holds %d lines of non-test Go, over its limit of %d: split it by concept", dir, lines, limit)
		}
	}
}

// packageLineLimit is how many lines of non-test Go a package may hold: a package that outgrows
// it holds more than one concern. The wiring package stays smaller; the benchmark is exempt.
func packageLineLimit(dir string) int {
	switch dir {
	case "bridge":
		return 999
	case "cmd/matrix2mqtt-bench":
		return math.MaxInt
	}
	return 2000
}
