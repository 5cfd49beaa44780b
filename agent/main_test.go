package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestInstallCopiesSelf: --install writes this executable, whole and executable, where a
// Kubernetes init container asks, and serves nothing.
func TestInstallCopiesSelf(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "agent")
	if err := Main(t.Context(), []string{"--install", dst}); err != nil {
		t.Fatalf("agent --install: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("installed %d bytes, want the executable's %d", len(got), len(want))
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed agent's mode: %v, %v; want 0755", st.Mode(), err)
	}
	if err := Main(t.Context(), []string{"--install", filepath.Join(t.TempDir(), "missing", "agent")}); err == nil {
		t.Error("--install into a directory that does not exist: no error")
	}
}
