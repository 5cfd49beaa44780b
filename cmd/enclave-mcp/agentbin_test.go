package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAgentBeside(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // makes dir/enclave-agent, or not
		want  bool
	}{
		{"none beside", func(*testing.T, string) {}, false},
		{"newer beside", func(t *testing.T, dir string) { writeAt(t, filepath.Join(dir, agentBinaryName), now.Add(time.Second)) }, true},
		{"same age", func(t *testing.T, dir string) { writeAt(t, filepath.Join(dir, agentBinaryName), now) }, true},
		{"older beside", func(t *testing.T, dir string) { writeAt(t, filepath.Join(dir, agentBinaryName), now.Add(-time.Hour)) }, false},
		{"a directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, agentBinaryName), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			self := filepath.Join(dir, "enclave-mcp")
			writeAt(t, self, now)
			tt.setup(t, dir)
			got := agentBeside(self)
			want := ""
			if tt.want {
				want = filepath.Join(dir, agentBinaryName)
			}
			if got != want {
				t.Errorf("agentBeside = %q, want %q", got, want)
			}
		})
	}
	t.Run("flag wins", func(t *testing.T) {
		if got := defaultAgent("/x/agent"); got != "/x/agent" {
			t.Errorf("defaultAgent(flag) = %q, want the flag's value", got)
		}
	})
}

func writeAt(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}
