package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHTTPToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, token string
		wantErr     string
		generated   bool
	}{
		{"127.0.0.1:8000", "given", "", false},
		{"127.0.0.1:8000", "", "", true},
		{"localhost:8000", "", "", true},
		{"[::1]:8000", "", "", true},
		{"0.0.0.0:8000", "", "listens beyond this machine", false},
		{":8000", "", "listens beyond this machine", false},
		{"10.1.2.3:8000", "", "listens beyond this machine", false},
		{"0.0.0.0:8000", "given", "", false},
		{"no-port", "", "want HOST:PORT", false},
	}
	for _, tc := range tests {
		t.Run(tc.addr+"/"+tc.token, func(t *testing.T) {
			t.Parallel()
			token, generated, err := httpToken(tc.addr, tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if generated != tc.generated || token == "" || (tc.token != "" && token != tc.token) {
				t.Fatalf("token %q generated %v", token, generated)
			}
			if generated && len(token) < 32 {
				t.Errorf("generated token too short: %q", token)
			}
		})
	}
}

func TestSandboxConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"sandbox":{"image":"img","memory_limit":"2g","tools_config":["python_executor"]},"policy":{"max_memory":"3g"}}`), 0o644)
	f := serveFlags{config: good, memory: "512m", network: true}
	cfg, policy, err := f.sandboxConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Image != "img" || cfg.MemoryLimit != "512m" || !cfg.NetworkEnabled || !policy.AllowNetwork || policy.MaxMemory != 3<<30 {
		t.Errorf("flags must override the file: %+v %+v", cfg, policy)
	}
	if _, ok := cfg.ToolsConfig["python_executor"]; !ok || len(cfg.ToolsConfig) != 1 {
		t.Errorf("tools_config list form lost: %v", cfg.ToolsConfig)
	}

	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"sandbox":{"imag":"typo"}}`), 0o644)
	f = serveFlags{config: bad}
	if _, _, err := f.sandboxConfig(); err == nil || !strings.Contains(err.Error(), "imag") {
		t.Errorf("a misspelt field must be an error naming it, got %v", err)
	}
}

func TestSchemaCommand(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"mcp", "openai", "openai-strict"} {
		var out bytes.Buffer
		if err := schemaCmd([]string{"--format", format}, &out); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		var list []map[string]any
		if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) < 3 {
			t.Fatalf("%s: not a JSON list of tools (%v): %s", format, err, out.String()[:min(200, out.Len())])
		}
	}
	if err := schemaCmd([]string{"--format", "yaml"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "valid: mcp, openai, openai-strict") {
		t.Errorf("unknown format must list the valid ones, got %v", err)
	}
}

// TestSchemaCommandWithConfig: with serve's config file the schema command prints what
// that server offers: the declared tools too, and only those tools_config names.
func TestSchemaCommandWithConfig(t *testing.T) {
	t.Parallel()
	config := filepath.Join(t.TempDir(), "config.json")
	err := os.WriteFile(config, []byte(`{
		"sandbox": {"tools_config": {"shell_executor": {}, "run_tests": {}}},
		"tools": [{"name": "run_tests", "description": "Run the tests", "argv": ["pytest", "-q", "{path}"],
		           "parameters": {"path": {"type": "string", "required": true}}}]
	}`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"mcp", "openai", "openai-strict"} {
		var out bytes.Buffer
		if err := schemaCmd([]string{"--format", format, "--config", config}, &out); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		var list []struct {
			Name     string `json:"name"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(out.Bytes(), &list); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		var names []string
		for _, tool := range list {
			names = append(names, tool.Name+tool.Function.Name)
		}
		if strings.Join(names, ",") != "shell_executor,run_tests" {
			t.Errorf("%s: tools %v, want shell_executor and run_tests", format, names)
		}
	}
}

// TestPrintDefaultsHidden: serve's help leaves out its hidden flags (the conformance
// fixtures) and shows the others with their defaults, whatever was parsed before.
func TestPrintDefaultsHidden(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.Bool(fixturesFlag, false, "fixtures")
	fs.Duration("task-after", 5*time.Second, "when a call becomes a task")
	if err := fs.Parse([]string{"--task-after", "1s", "--" + fixturesFlag}); err != nil {
		t.Fatal(err)
	}
	printDefaults(fs, hiddenServeFlags)
	if help := out.String(); strings.Contains(help, fixturesFlag) || !strings.Contains(help, "-task-after") || !strings.Contains(help, "(default 5s)") {
		t.Errorf("help:\n%s\nwant -task-after with its default 5s, and no -%s", help, fixturesFlag)
	}
}
