// Package configs holds MCP client configurations for enclave-mcp; this test keeps them
// valid: well-formed JSON, and only flags that `enclave-mcp serve` has.
package configs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

type server struct {
	Type    string            `json:"type"`
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
}

func load(t *testing.T, name string) server {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		MCPServers map[string]server `json:"mcpServers"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s, ok := cfg.MCPServers["enclave"]
	if !ok {
		t.Fatalf("%s has no mcpServers.enclave", name)
	}
	return s
}

func TestStdioConfigsUseRealFlags(t *testing.T) {
	help, _ := exec.Command(testenv.Binary(t), "serve", "--help").CombinedOutput() // --help exits non-zero
	for _, name := range []string{"claude_desktop_config.json", "stdio.json"} {
		s := load(t, name)
		if s.Command == "" || len(s.Args) == 0 || s.Args[0] != "serve" {
			t.Errorf("%s: command %q args %v, want enclave-mcp serve ...", name, s.Command, s.Args)
		}
		if filepath.Base(s.Command) != "enclave-mcp" {
			t.Errorf("%s: command %q is not enclave-mcp", name, s.Command)
		}
		for _, a := range s.Args[1:] {
			if strings.HasPrefix(a, "-") && !hasFlag(string(help), strings.TrimLeft(a, "-")) {
				t.Errorf("%s: flag %s is not in enclave-mcp serve --help:\n%s", name, a, help)
			}
		}
	}
}

// hasFlag reports whether the flag package's usage text lists flag name ("  -name ..." or
// "  -name" at the end of a line, for booleans).
func hasFlag(help, name string) bool {
	for _, line := range strings.Split(help, "\n") {
		f, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if f == "-"+name {
			return true
		}
	}
	return false
}

func TestRemoteConfigsCarryTheToken(t *testing.T) {
	for name, path := range map[string]string{"remote-http.json": "/mcp", "remote-sse.json": "/sse"} {
		s := load(t, name)
		if !strings.HasSuffix(s.URL, path) || !strings.HasPrefix(s.Headers["Authorization"], "Bearer ") {
			t.Errorf("%s: url %q, Authorization %q", name, s.URL, s.Headers["Authorization"])
		}
		if strings.Contains(s.URL, "token=") || strings.Contains(s.URL, "api_key=") {
			t.Errorf("%s: a token in the URL is never read (and ends up in logs)", name)
		}
	}
}
