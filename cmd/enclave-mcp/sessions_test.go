package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

const bobToken = "bob-session-token-0c9d7e"

// sdk is a session API client of servers with token.
func sdk(t *testing.T, token string, servers ...string) *client.Sessions {
	t.Helper()
	s, err := client.NewSessions(client.SessionsConfig{Servers: servers, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// apiError is err's *client.APIError; the test fails without one.
func apiError(t *testing.T, err error) *client.APIError {
	t.Helper()
	var e *client.APIError
	if !errors.As(err, &e) {
		t.Fatalf("error %v carries no API answer", err)
	}
	return e
}

// TestIntegrationSessionAPIEndToEnd walks every endpoint of the session API through the Go
// SDK against the whole HTTP stack and real Docker sandboxes, with two tokens (principals):
// the quota (a file past it fails, the session recovers), the allow-list (403 listing what
// is allowed), the same session name used by both principals apart, and binary bytes
// uploaded and downloaded unchanged.
func TestIntegrationSessionAPIEndToEnd(t *testing.T) {
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultImage)
	f := startHTTP(t, fixtureOptions{
		creator:  sandbox.NewCreator(engine, sandbox.TypeDocker),
		sessions: &session.NamedConfig{},
		tokens:   []httpapi.Credential{{Name: "bob", Token: bobToken}},
	})
	alice, bob := sdk(t, httpTestToken, f.url), sdk(t, bobToken, f.url)
	ctx := t.Context()

	if h := f.do(t, "GET", "/workspace/se/healthy", nil); h.status != 200 || !strings.Contains(h.body, `"healthy"`) {
		t.Errorf("healthy without a token: %d %s", h.status, h.body)
	}
	if h := alice.Healthy(ctx); !h[f.url] {
		t.Errorf("the SDK's health %v", h)
	}
	if a := f.do(t, "POST", "/workspace/se/session/x", nil); a.status != 401 {
		t.Errorf("create without a token: %d %s", a.status, a.body)
	}

	info, err := alice.Create(ctx, "shared", "1M")
	if err != nil || info.Size != "1M" || info.SessionID != "shared" {
		t.Fatalf("create: %+v %v", info, err)
	}
	if _, err := bob.Create(ctx, "shared", ""); err != nil {
		t.Fatalf("bob's session of the same name: %v", err)
	}
	_, err = alice.Create(ctx, "shared", "")
	if e := apiError(t, err); !errors.Is(err, client.ErrExists) || e.StatusCode != http.StatusConflict {
		t.Errorf("create again: %v", err)
	}
	_, err = alice.Create(ctx, "huge", "2G")
	if e := apiError(t, err); !errors.Is(err, client.ErrPolicy) || !strings.Contains(e.Detail, "maximum session size of 1G") {
		t.Errorf("a size over the maximum: %v", err)
	}

	t.Run("files", func(t *testing.T) {
		fi, err := alice.CreateFile(ctx, "shared", "hello.py", []byte("print('hello from', __file__)\n"), 0o640)
		if err != nil || fi.Name != "hello.py" || fi.Mode != "0640" || fi.Size != 30 {
			t.Fatalf("create file: %+v %v", fi, err)
		}
		binary := make([]byte, 0, 3*256)
		for i := range 3 * 256 {
			binary = append(binary, byte(i))
		}
		if fi, err := alice.Upload(ctx, "shared", "data/all-bytes.bin", bytes.NewReader(binary)); err != nil || fi.Size != int64(len(binary)) {
			t.Fatalf("upload: %+v %v", fi, err)
		}
		var got bytes.Buffer
		if n, err := alice.Download(ctx, "shared", "data/all-bytes.bin", &got); err != nil || n != int64(len(binary)) || !bytes.Equal(got.Bytes(), binary) {
			t.Errorf("download: %d bytes, %v: not the uploaded bytes", n, err)
		}
		if fi, err := alice.CreateFile(ctx, "shared", "nul.bin", []byte{0, 'a', 0xff}, 0); err != nil || fi.Size != 3 {
			t.Errorf("binary content through create: %+v %v", fi, err)
		}
		list, err := alice.Files(ctx, "shared")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range list.Files {
			names = append(names, f.Name)
			if f.Modified.IsZero() || f.Mode == "" {
				t.Errorf("entry %+v lacks its mode or time", f)
			}
		}
		if strings.Join(names, ",") != "data,data/all-bytes.bin,hello.py,nul.bin" {
			t.Errorf("files %v", names)
		}
		other, err := bob.Files(ctx, "shared")
		if err != nil || len(other.Files) != 0 {
			t.Errorf("bob's session of the same name shows %+v %v", other.Files, err)
		}
		_, err = bob.Download(ctx, "shared", "hello.py", &bytes.Buffer{})
		if !errors.Is(err, client.ErrNotFound) {
			t.Errorf("bob reads alice's file: %v", err)
		}
		if a := f.do(t, "GET", "/workspace/se/download/shared/..%2F..%2Fetc%2Fpasswd", nil, "Authorization", "Bearer "+httpTestToken); a.status != 400 {
			t.Errorf("a path leaving the workspace: %d %s", a.status, a.body)
		}
	})

	t.Run("execute", func(t *testing.T) {
		res, err := alice.Execute(ctx, "shared", "ls", []string{"-l", "data"}, 10*time.Second)
		if err != nil || res.ExitCode != 0 || !res.OK() || !strings.Contains(res.Stdout, "all-bytes.bin") {
			t.Fatalf("ls: %+v %v", res, err)
		}
		_, err = alice.Execute(ctx, "shared", "bash", []string{"-c", "id"}, 0)
		e := apiError(t, err)
		if !errors.Is(err, client.ErrPolicy) || e.StatusCode != http.StatusForbidden || !strings.Contains(e.Detail, "allowed commands are: ") ||
			!strings.Contains(e.Detail, "ls") || !strings.Contains(err.Error(), "server "+f.url) {
			t.Errorf("a command outside the allow-list: %v", err)
		}
		res, err = alice.ExecuteCode(ctx, "shared", "import os; print(sorted(os.listdir('.')))", "", "python", 0)
		if err != nil || !res.OK() || !strings.Contains(res.Stdout, "hello.py") {
			t.Errorf("python: %+v %v", res, err)
		}
		res, err = alice.ExecuteCode(ctx, "shared", "echo $((6*7)) from $0", "calc.sh", "bash", 0)
		if err != nil || res.Stdout != "42 from ./calc.sh\n" {
			t.Errorf("bash: %+v %v", res, err)
		}
		st, err := alice.Status(ctx, "shared")
		if err != nil || st.SizeBytes != 1<<20 || st.Files != 4 || st.UsedBytes <= 0 || st.RunningProcesses != 0 || st.Full {
			t.Errorf("status: %+v %v", st, err)
		}
	})

	t.Run("quota", func(t *testing.T) {
		_, err := alice.Upload(ctx, "shared", "big.bin", bytes.NewReader(make([]byte, 2<<20)))
		e := apiError(t, err)
		if !errors.Is(err, client.ErrNoSpace) || e.StatusCode != http.StatusInsufficientStorage || !strings.Contains(e.Detail, `session "shared" is full`) {
			t.Fatalf("a file past the quota: %v", err)
		}
		res, err := alice.ExecuteCode(ctx, "shared", "open('fill', 'wb').write(b'x' * (2 << 20))", "", "", 0)
		if err != nil || res.OK() || !res.SessionFull || !strings.Contains(res.Stderr, "No space left on device") {
			t.Fatalf("code past the quota: %+v %v", res, err)
		}
		if st, err := alice.Status(ctx, "shared"); err != nil || !st.Full {
			t.Errorf("a full session's status: %+v %v", st, err)
		}
		if res, err := alice.Execute(ctx, "shared", "rm", []string{"fill"}, 0); err != nil || !res.OK() {
			t.Fatalf("rm: %+v %v", res, err)
		}
		if _, err := alice.CreateFile(ctx, "shared", "after.txt", []byte("room again"), 0); err != nil {
			t.Errorf("the session recovers once files are removed: %v", err)
		}
	})

	t.Run("body too large", func(t *testing.T) {
		body := `{"command": "echo", "args": ["` + strings.Repeat("a", 300<<10) + `"]}`
		a := f.do(t, "POST", "/workspace/se/execute/shared", strings.NewReader(body), "Authorization", "Bearer "+httpTestToken)
		if a.status != http.StatusRequestEntityTooLarge {
			t.Errorf("%d %s", a.status, a.body)
		}
	})

	t.Run("cleanup and delete", func(t *testing.T) {
		res, err := alice.CleanupAll(ctx, false)
		if err != nil || !slices.Equal(res.Cleaned, []string{"shared"}) {
			t.Errorf("cleanup: %+v %v", res, err)
		}
		if _, err := alice.Status(ctx, "shared"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("alice's session after cleanup: %v", err)
		}
		if _, err := bob.Status(ctx, "shared"); err != nil {
			t.Errorf("alice's cleanup ended bob's session: %v", err)
		}
		if err := bob.Delete(ctx, "shared"); err != nil {
			t.Fatal(err)
		}
		if err := bob.Delete(ctx, "shared"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("a second delete: %v", err)
		}
		if n := len(f.manager.List()); n != 0 {
			t.Errorf("%d sandboxes left", n)
		}
	})
}

// TestSessionsSpreadOverThreeServers: three servers on loopback (the whole HTTP stack, the
// process backend); sessions are spread over all three by their ids, each lives on the
// server the SDK picked, a second SDK instance listing the servers in another order finds
// every one, and a server that is down is named in the error.
func TestSessionsSpreadOverThreeServers(t *testing.T) {
	t.Parallel()
	var urls []string
	for range 3 {
		f := startHTTP(t, fixtureOptions{
			creator: sandbox.NewCreator(testenv.Process(t), sandbox.TypeDocker), sessions: &session.NamedConfig{},
		})
		urls = append(urls, f.url)
	}
	first := sdk(t, httpTestToken, urls...)
	second := sdk(t, httpTestToken, urls[2], urls[0], urls[1])
	ctx := t.Context()

	// Two ids per server, found by asking the SDK where each candidate lives.
	perServer := map[string][]string{}
	var ids []string
	for i := 0; len(ids) < 6 && i < 1000; i++ {
		id := fmt.Sprintf("session-%d", i)
		if srv := first.Server(id); len(perServer[srv]) < 2 {
			perServer[srv] = append(perServer[srv], id)
			ids = append(ids, id)
		}
	}
	if len(perServer) != 3 || len(ids) != 6 {
		t.Fatalf("ids spread %v: hashing sends no session to some server", perServer)
	}
	for _, id := range ids {
		if _, err := first.Create(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := first.CreateFile(ctx, id, "whoami.txt", []byte(id), 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		home := first.Server(id)
		if second.Server(id) != home {
			t.Errorf("%s: the second SDK picks %s, the first %s", id, second.Server(id), home)
		}
		var got bytes.Buffer
		if _, err := second.Download(ctx, id, "whoami.txt", &got); err != nil || got.String() != id {
			t.Errorf("%s: the second SDK reads %q, %v", id, got.String(), err)
		}
		for _, u := range urls {
			_, err := sdk(t, httpTestToken, u).Status(ctx, id)
			if lives := err == nil; lives != (u == home) {
				t.Errorf("%s lives on %s: %v (its server is %s)", id, u, err, home)
			}
		}
	}
	// Without the third server, sessions of the other two stay where they are.
	two := sdk(t, httpTestToken, urls[0], urls[1])
	for _, id := range ids {
		if home := first.Server(id); home != urls[2] && two.Server(id) != home {
			t.Errorf("%s moved from %s to %s when another server left", id, home, two.Server(id))
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	_ = ln.Close()
	withDown := sdk(t, httpTestToken, append(slices.Clone(urls), down)...)
	var lost string
	for i := 0; lost == "" && i < 1000; i++ {
		if id := fmt.Sprintf("lost-%d", i); withDown.Server(id) == down {
			lost = id
		}
	}
	_, err = withDown.Create(ctx, lost, "")
	var se *client.ServerError
	if !errors.As(err, &se) || se.Server != down || !strings.Contains(err.Error(), down) {
		t.Errorf("a session on a server that is down: %v, want an error naming %s", err, down)
	}
	res, err := withDown.CleanupAll(ctx, true)
	if err == nil || !strings.Contains(err.Error(), down) || len(res.Cleaned) != 6 {
		t.Errorf("cleanup over every server: %+v %v, want the 6 sessions ended and %s named", res, err, down)
	}
}

// TestSessionsConfigFileAndFlags: the config file's sessions section and the flags merge,
// a flag given on the command line winning; bad values are refused naming where they came from.
func TestSessionsConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(body string) string {
		p := filepath.Join(dir, fmt.Sprintf("c%d.json", time.Now().UnixNano()))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file(`{"sessions": {"default_size": "20M", "max_size": "200M", "idle_timeout": 90, "allowed_commands": ["ls", "cat"],
		"script_types": {"py": {"extension": ".py", "argv": ["python3", "{file}"]}}, "image": "img"}}`)
	f := serveFlags{config: good}
	if _, _, err := f.sandboxConfig(); err != nil {
		t.Fatal(err)
	}
	if n := f.named; n.DefaultSize != 20<<20 || n.MaxSize != 200<<20 || n.IdleTimeout != 90*time.Second ||
		!slices.Equal(n.AllowedCommands, []string{"ls", "cat"}) || len(n.ScriptTypes) != 1 || n.Image != "img" {
		t.Errorf("from the file: %+v", n)
	}
	f = serveFlags{config: good, sessions: sessionFlags{size: "30M", maxSize: "1G", idle: time.Minute},
		set: map[string]bool{"session-size": true, "session-idle": true}}
	if _, _, err := f.sandboxConfig(); err != nil {
		t.Fatal(err)
	}
	if n := f.named; n.DefaultSize != 30<<20 || n.MaxSize != 200<<20 || n.IdleTimeout != time.Minute {
		t.Errorf("flags given win, defaults of flags not given do not: %+v", n)
	}
	f = serveFlags{sessions: sessionFlags{size: "50M", maxSize: "1G", idle: time.Hour}}
	if _, _, err := f.sandboxConfig(); err != nil || f.named.DefaultSize != 50<<20 || f.named.IdleTimeout != time.Hour {
		t.Errorf("defaults: %+v %v", f.named, err)
	}

	for _, tc := range []struct {
		name  string
		flags serveFlags
		says  string
	}{
		{"bad size flag", serveFlags{sessions: sessionFlags{size: "lots"}, set: map[string]bool{"session-size": true}}, "--session-size"},
		{"bad size in the file", serveFlags{config: file(`{"sessions": {"max_size": "x"}}`)}, "sessions.max_size"},
		{"default over max", serveFlags{config: file(`{"sessions": {"default_size": "2G"}}`)}, "over the max size"},
		{"idle flag zero", serveFlags{sessions: sessionFlags{idle: 0}, set: map[string]bool{"session-idle": true}}, "--session-idle"},
		{"negative idle in the file", serveFlags{config: file(`{"sessions": {"idle_timeout": -5}}`)}, "sessions.idle_timeout"},
		{"unknown field", serveFlags{config: file(`{"sessions": {"idle": 5}}`)}, `unknown field "idle"`},
		{"script type without its file", serveFlags{config: file(`{"sessions": {"script_types": {"py": {"extension": ".py", "argv": ["python3"]}}}}`)}, "{file}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.flags.sandboxConfig()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v, want one saying %q", err, tc.says)
			}
		})
	}
}

// TestReadTokensFile: name:token lines, comments skipped; a bad line is refused naming its
// number and never the token; names and tokens must be unique across all principals.
func TestReadTokensFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds, err := readTokensFile(write("good", "# principals\nalice: alice-token-1\n\nbob:bob-token-2\n"), log)
	if err != nil || len(creds) != 2 || creds[0] != (httpapi.Credential{Name: "alice", Token: "alice-token-1"}) || creds[1].Name != "bob" {
		t.Fatalf("%+v %v", creds, err)
	}
	if err := httpapi.CheckCredentials("operator-token", creds); err != nil {
		t.Errorf("distinct tokens refused: %v", err)
	}
	if err := httpapi.CheckCredentials("alice-token-1", creds); err == nil {
		t.Error("a named token equal to the operator's is accepted")
	}
	if err := httpapi.CheckCredentials("", []httpapi.Credential{{Name: "a", Token: "t1"}, {Name: "a", Token: "t2"}}); err == nil {
		t.Error("two tokens of one name are accepted")
	}
	for _, tc := range []struct{ name, body, says string }{
		{"no colon", "alice\n", "line 1: want name:token"},
		{"empty token", "# x\nalice:\n", "line 2"},
		{"token with a space", "alice: two words\n", "line 1"},
		{"no tokens", "# nothing\n", "no tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readTokensFile(write(tc.name, tc.body), log)
			if err == nil || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "two words") {
				t.Errorf("error %v, want one saying %q without the token", err, tc.says)
			}
		})
	}
	if err := httpapi.CheckCredentials("", []httpapi.Credential{{Name: "bad name", Token: "t"}}); err == nil {
		t.Error("a name with a space is accepted")
	}
}

// TestIntegrationServeSessionAPI runs the real binary with a tokens file (and no operator
// token: none is generated beside it), the session flags and a config file's allow-list:
// serve mounts the session API on its listener, each named token is its own principal on it
// and on the REST API, the flags bound the sizes, and shutdown removes the sessions.
func TestIntegrationServeSessionAPI(t *testing.T) {
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultImage)
	bin := testenv.Binary(t)
	dir := t.TempDir()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	alice, bob := "alice-"+suffix, "bob-"+suffix
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# principals\n"+alice+":alice-token-"+suffix+"\n"+bob+":bob-token-"+suffix+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.json")
	if err := os.WriteFile(config, []byte(`{"sessions": {"allowed_commands": ["echo", "rm"], "max_size": "64M"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--http", "127.0.0.1:0", "--warm", "0", "--log-format", "json", "--config", config,
		"--tokens-file", tokens, "--session-size", "2M", "--session-max-size", "4M", "--session-idle", "600s")
	cmd.Env = append(withoutTokenEnv(os.Environ()), "XDG_RUNTIME_DIR="+dir)
	lines, stderr, exited := startLogged(t, cmd)
	base, generated := awaitServing(t, lines, stderr)
	if generated != "" {
		t.Errorf("a token was generated beside the tokens file: %s", generated)
	}
	ctx := t.Context()
	a, b := sdk(t, "alice-token-"+suffix, base), sdk(t, "bob-token-"+suffix, base)

	if info, err := a.Create(ctx, "s", ""); err != nil || info.Size != "2M" {
		t.Fatalf("create with --session-size's default: %+v %v", info, err)
	}
	if _, err := a.Create(ctx, "t", "8M"); !errors.Is(err, client.ErrPolicy) || !strings.Contains(err.Error(), "maximum session size of 4M") {
		t.Errorf("a size over --session-max-size (the flag wins over the file): %v", err)
	}
	if _, err := a.Execute(ctx, "s", "ls", nil, 0); !errors.Is(err, client.ErrPolicy) || !strings.Contains(err.Error(), "allowed commands are: echo, rm") {
		t.Errorf("the config's allow-list: %v", err)
	}
	if res, err := a.Execute(ctx, "s", "echo", []string{"hi"}, 0); err != nil || res.Stdout != "hi\n" {
		t.Errorf("echo: %+v %v", res, err)
	}
	if _, err := b.Create(ctx, "s", ""); err != nil {
		t.Errorf("bob's session of the same name: %v", err)
	}
	for _, tc := range []struct{ token, owner string }{{"alice-token-" + suffix, alice}, {"bob-token-" + suffix, bob}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sandboxes", nil)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var list []client.Info
		_ = json.NewDecoder(resp.Body).Decode(&list)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || len(list) != 1 {
			t.Errorf("REST /sandboxes for %s: %d, %d sandboxes; want its one session's", tc.owner, resp.StatusCode, len(list))
		}
	}
	if list, err := engine.List(ctx, map[string]string{sandbox.LabelOwner: httpapi.TokenOwner(alice)}); err != nil || len(list) != 1 {
		t.Errorf("alice's containers: %d %v", len(list), err)
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("the server did not stop on SIGTERM: %s", stderr.String())
	}
	if strings.Contains(stderr.String(), "alice-token-"+suffix) {
		t.Errorf("a token is in the log")
	}
	for _, owner := range []string{alice, bob} {
		testwait.Until(t, 10*time.Second, owner+"'s session containers removed", func() bool {
			list, err := engine.List(context.Background(), map[string]string{sandbox.LabelOwner: httpapi.TokenOwner(owner)})
			return err == nil && len(list) == 0
		})
	}
}
