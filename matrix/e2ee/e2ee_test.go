package e2ee

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPickleKey checks that a pickle key is made once into DATA_DIR, readable only by the owner,
// and that a configured one wins.
func TestPickleKey(t *testing.T) {
	dir := t.TempDir()
	c := &Crypto{opts: Options{DataDir: dir}}
	first, err := c.pickleKey()
	if err != nil || len(first) == 0 {
		t.Fatalf("pickleKey() = %q, %v", first, err)
	}
	info, err := os.Stat(filepath.Join(dir, pickleKeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("pickle key file: %v, %v", info, err)
	}
	if again, err := c.pickleKey(); err != nil || string(again) != string(first) {
		t.Fatalf("second pickleKey() = %q, %v; want %q", again, err, first)
	}
	c.cfg.PickleKey = "configured"
	if got, _ := c.pickleKey(); string(got) != "configured" {
		t.Fatalf("pickleKey() = %q, want the configured one", got)
	}
}

// TestRecoveryKey checks that the configured recovery key wins over the file the bridge wrote,
// and that the file's comments are skipped.
func TestRecoveryKey(t *testing.T) {
	dir := t.TempDir()
	c := &Crypto{opts: Options{DataDir: dir}}
	if got := c.recoveryKey(); got != "" {
		t.Fatalf("recoveryKey() without one = %q", got)
	}
	content := "# matrix2mqtt recovery key: keep a copy.\n# second comment\nEsTc abcd efgh\n"
	if err := os.WriteFile(filepath.Join(dir, recoveryKeyFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := c.recoveryKey(); got != "EsTc abcd efgh" {
		t.Fatalf("recoveryKey() from the file = %q", got)
	}
	c.cfg.RecoveryKey = " EsTx configured \n"
	if got := c.recoveryKey(); got != "EsTx configured" {
		t.Fatalf("recoveryKey() = %q, want the configured one", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for value, ok := range map[string]bool{"all": true, "cross-signed": true, "": false, "friends": false} {
		if err := (Config{ShareKeysWith: value}).Validate(); (err == nil) != ok {
			t.Errorf("Validate() with E2EE_SHARE_KEYS_WITH=%q = %v", value, err)
		}
	}
}
