package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

// TestResolveTokenSources: the token comes from --token, --token-file, ENCLAVE_MCP_TOKEN or
// ENCLAVE_TOKEN, in that order; --token still works but warns that ps shows it; bad files
// and tokens are refused with the reason.
func TestResolveTokenSources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "file-token-123\n", 0o600)
	loose := write("loose", "loose-token\n", 0o644)
	empty := write("empty", "\n\n", 0o600)
	spaced := write("spaced", "two words\n", 0o600)
	huge := write("huge", strings.Repeat("a", maxTokenBytes+1), 0o600)
	env := func(vars ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(vars); i += 2 {
				if vars[i] == k {
					return vars[i+1]
				}
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name, flag, file string
		getenv           func(string) string
		want             string
		source           tokenSource
		wantErr, warn    string
	}{
		{name: "flag, kept as it was", flag: "flag-token", getenv: env(tokenEnv, "env-token"), want: "flag-token", source: "--token", warn: "process list (ps)"},
		{name: "file", file: good, getenv: env(tokenEnv, "env-token"), want: "file-token-123", source: "--token-file"},
		{name: "file readable by others", file: loose, getenv: env(), want: "loose-token", source: "--token-file", warn: "chmod 600"},
		{name: "env", getenv: env(tokenEnv, "env-token", legacyTokenEnv, "old-token"), want: "env-token", source: tokenEnv},
		{name: "legacy env", getenv: env(legacyTokenEnv, "old-token"), want: "old-token", source: legacyTokenEnv},
		{name: "none", getenv: env(), want: ""},
		{name: "flag and file", flag: "x", file: good, getenv: env(), wantErr: "both set"},
		{name: "missing file", file: filepath.Join(dir, "nope"), getenv: env(), wantErr: "reading --token-file"},
		{name: "empty file", file: empty, getenv: env(), wantErr: "empty"},
		{name: "space in token", file: spaced, getenv: env(), wantErr: "holds a space"},
		{name: "huge file", file: huge, getenv: env(), wantErr: "larger than"},
		{name: "control character in env", getenv: env(tokenEnv, "a\x01b"), wantErr: "the token from " + tokenEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			got, source, err := resolveToken(tc.flag, tc.file, tc.getenv, log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want || source != tc.source {
				t.Fatalf("= %q from %q, %v; want %q from %q", got, source, err, tc.want, tc.source)
			}
			if !strings.Contains(logs.String(), tc.warn) || (tc.warn == "" && logs.Len() > 0) {
				t.Errorf("log = %q, want a warning with %q", logs.String(), tc.warn)
			}
			if got != "" && strings.Contains(logs.String(), got) {
				t.Errorf("the token is in the log: %q", logs.String())
			}
		})
	}
}

// TestShowGeneratedToken: a generated token is printed on a terminal and otherwise written to
// a 0600 file whose path is logged; the log never carries the token.
func TestShowGeneratedToken(t *testing.T) {
	t.Parallel()
	const token = "generated-0123456789abcdef"
	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		var term, logs bytes.Buffer
		path, err := showGeneratedToken(token, &term, true, t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil || path != "" || !strings.Contains(term.String(), token) || logs.Len() != 0 {
			t.Fatalf("path %q err %v; terminal %q; log %q", path, err, term.String(), logs.String())
		}
	})
	t.Run("not a terminal", func(t *testing.T) {
		t.Parallel()
		var stderr, logs bytes.Buffer
		dir := t.TempDir()
		path, err := showGeneratedToken(token, &stderr, false, dir, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 || filepath.Dir(path) != dir {
			t.Fatalf("token file %s: %v %v", path, st, err)
		}
		data, _ := os.ReadFile(path)
		if strings.TrimSpace(string(data)) != token {
			t.Errorf("token file holds %q", data)
		}
		if stderr.Len() != 0 || strings.Contains(logs.String(), token) || !strings.Contains(logs.String(), path) {
			t.Errorf("stderr %q, log %q: want only the file's path logged", stderr.String(), logs.String())
		}
	})
}

// TestIntegrationServeTokenSources runs the real binary with each token source: the server
// accepts the token, and neither its log nor its command line (what ps shows) carries it,
// except with --token, which still works and warns. A generated token goes to a 0600 file
// (stderr is a pipe here, not a terminal) that is removed when the server stops.
func TestIntegrationServeTokenSources(t *testing.T) {
	testenv.RequireDocker(t)
	bin := testenv.Binary(t)
	t.Parallel()
	const token = "integration-token-4c2f9a7e"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args, env []string
		inCmdline bool   // --token: ps shows it, by the user's choice
		warn      string // a text the log must carry
		generated bool
	}{
		{name: "token file", args: []string{"--token-file", tokenFile}},
		{name: "ENCLAVE_MCP_TOKEN", env: []string{tokenEnv + "=" + token}},
		{name: "ENCLAVE_TOKEN", env: []string{legacyTokenEnv + "=" + token}},
		{name: "token flag", args: []string{"--token", token}, inCmdline: true, warn: "process list (ps)"},
		{name: "generated", generated: true, warn: "token_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runtimeDir := t.TempDir()
			args := append([]string{"serve", "--http", "127.0.0.1:0", "--warm", "0", "--log-format", "json"}, tc.args...)
			cmd := exec.Command(bin, args...)
			cmd.Env = append(withoutTokenEnv(os.Environ()), append(tc.env, "XDG_RUNTIME_DIR="+runtimeDir)...)
			lines, stderr, exited := startLogged(t, cmd)

			base, tokenPath := awaitServing(t, lines, stderr)
			used := token
			if tc.generated {
				if tokenPath == "" {
					t.Fatalf("no token_file logged: %s", stderr.String())
				}
				st, err := os.Stat(tokenPath)
				if err != nil || st.Mode().Perm() != 0o600 || filepath.Dir(tokenPath) != runtimeDir {
					t.Fatalf("token file %s: %v %v", tokenPath, st, err)
				}
				data, _ := os.ReadFile(tokenPath)
				used = strings.TrimSpace(string(data))
			}
			for _, c := range []struct {
				auth string
				want int
			}{{"Bearer " + used, 200}, {"", 401}, {"Bearer wrong", 401}} {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/sandboxes", nil)
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != c.want {
					t.Errorf("GET /sandboxes with %q = %d, want %d", c.auth, resp.StatusCode, c.want)
				}
			}
			cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(cmdline), used); got != tc.inCmdline {
				t.Errorf("token in the command line (ps): %v, want %v", got, tc.inCmdline)
			}

			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("the server did not stop on SIGTERM: %s", stderr.String())
			}
			logs := stderr.String()
			if strings.Contains(logs, used) {
				t.Errorf("the token is in the log:\n%s", logs)
			}
			if !strings.Contains(logs, tc.warn) {
				t.Errorf("the log lacks %q:\n%s", tc.warn, logs)
			}
			if tc.generated {
				if _, err := os.Stat(tokenPath); !os.IsNotExist(err) {
					t.Errorf("the token file outlived the server: %v", err)
				}
			}
		})
	}
}

// awaitServing waits for the log line naming the listener, and returns the base URL and the
// token file a line before it named (if any).
func awaitServing(t *testing.T, lines <-chan map[string]any, stderr *syncbuf.Buffer) (base, tokenFile string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		select {
		case line := <-lines:
			if p, ok := line["token_file"].(string); ok {
				tokenFile = p
			}
			if rest, ok := line["rest"].(string); ok {
				return strings.TrimSuffix(rest, "/sandboxes"), tokenFile
			}
		case <-ctx.Done():
			t.Fatalf("the server never logged its listener:\n%s", stderr.String())
		}
	}
}

func withoutTokenEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, tokenEnv+"=") && !strings.HasPrefix(kv, legacyTokenEnv+"=") && !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			out = append(out, kv)
		}
	}
	return out
}
