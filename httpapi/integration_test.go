package httpapi_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The behaviours ms-enclave's own suite checks through its HTTP server, in its order, plus
// what its client expects on the wire; each step builds on the one before.
func TestIntegrationSandboxLifecycle(t *testing.T) {
	s := newEngineServer(t, nil)

	if got := strings.TrimSpace(string(s.do("GET", "/sandboxes", nil).body)); got != "[]" {
		t.Fatalf("list starts as %s, want []", got)
	}

	// The Python client's full default body: network_enabled true and memory 4g are not
	// refused but resolved by policy, with notes; unknown fields are ignored.
	body := pythonClientDefaults(sandbox.DefaultImage)
	body["env_vars"] = map[string]string{"API_SECRET": "hunter2"}
	id := s.create(body)

	var list []info
	s.must("GET", "/sandboxes", nil, &list)
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("list after create = %+v", list)
	}

	in := s.info(id)
	if in.Status != "running" || in.Type != "docker" {
		t.Errorf("created sandbox is %s/%s, want running/docker", in.Status, in.Type)
	}
	notes := fmt.Sprint(in.Metadata["policy_notes"])
	if !strings.Contains(notes, "network_enabled") {
		t.Errorf("policy notes %q do not say network was turned off", notes)
	}
	if in.Config["network_enabled"] == true {
		t.Errorf("config shows network enabled after policy: %v", in.Config)
	}
	raw := s.do("GET", "/sandbox/"+id, nil).body
	if bytes.Contains(raw, []byte("hunter2")) {
		t.Errorf("SandboxInfo leaks an env value: %s", raw)
	}
	if env, _ := in.Config["env_vars"].(map[string]any); env["API_SECRET"] == nil {
		t.Errorf("config hides the env var's name too: %v", in.Config)
	}
	for _, tool := range []string{"python_executor", "shell_executor", "file_operation"} {
		if in.AvailableTools[tool] == nil {
			t.Errorf("available_tools lacks %s", tool)
		}
	}

	steps := []struct {
		name, tool string
		params     any
		status     string
		output     string // substring
	}{
		{"python", "python_executor", map[string]any{"code": "print('Hello from sandbox!')\nprint(f'2 + 2 = {2 + 2}')"}, "success", "Hello from sandbox!\n2 + 2 = 4\n"},
		{"env reaches code", "python_executor", map[string]any{"code": "import os; print(os.environ['API_SECRET'])"}, "success", "hunter2"},
		{"shell echo", "shell_executor", map[string]any{"command": "echo hi there"}, "success", "hi there"},
		{"exit 124 is an error, not a timeout", "shell_executor", map[string]any{"command": "bash -c 'exit 124'"}, "error", ""},
		{"fractional timeout", "python_executor", map[string]any{"code": "import time; time.sleep(5)", "timeout": 0.3}, "timeout", ""},
		{"empty code", "python_executor", map[string]any{"code": ""}, "error", ""},
		{"bad arguments are a result", "python_executor", map[string]any{"cod": "1"}, "error", ""},
		{"file create", "file_operation", map[string]any{"operation": "create", "file_path": "f.txt"}, "success", ""},
		{"file exists", "file_operation", map[string]any{"operation": "exists", "file_path": "f.txt"}, "success", "exists"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := s.execute(id, st.tool, st.params)
			if res.Status != st.status || !strings.Contains(res.Output, st.output) {
				t.Errorf("%s = %s %q (error %q), want %s %q", st.tool, res.Status, res.Output, res.Error, st.status, st.output)
			}
		})
	}
	t.Run("top-level timeout applies when parameters carry none", func(t *testing.T) {
		var res toolResult
		s.must("POST", "/sandbox/tool/execute", map[string]any{"sandbox_id": id, "tool_name": "shell_executor",
			"parameters": map[string]any{"command": "sleep 5"}, "timeout": 0.3}, &res)
		if res.Status != "timeout" {
			t.Errorf("status %s, want timeout", res.Status)
		}
	})
	t.Run("unknown tool is 404", func(t *testing.T) {
		r := s.do("POST", "/sandbox/tool/execute", map[string]any{"sandbox_id": id, "tool_name": "nope", "parameters": map[string]any{}})
		if r.status != 404 || !strings.Contains(r.detail(t), "nope") {
			t.Errorf("= %d %s", r.status, r.body)
		}
	})

	var schemas map[string]struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	s.must("GET", "/sandbox/"+id+"/tools", nil, &schemas)
	if schemas["python_executor"].Type != "function" || schemas["python_executor"].Function.Name != "python_executor" {
		t.Errorf("tools = %+v", schemas)
	}

	// Stop: still listed, status stopped; tools refuse to run; the first delete is 200.
	s.must("POST", "/sandbox/"+id+"/stop", nil, nil)
	if got := s.info(id).Status; got != "stopped" {
		t.Errorf("after stop, status %s, want stopped", got)
	}
	if r := s.do("POST", "/sandbox/tool/execute", map[string]any{"sandbox_id": id, "tool_name": "shell_executor",
		"parameters": map[string]any{"command": "true"}}); r.status != http.StatusConflict {
		t.Errorf("execute in a stopped sandbox = %d %s, want 409", r.status, r.body)
	}
	start := time.Now()
	s.must("DELETE", "/sandbox/"+id, nil, nil)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("delete took %v; ms-enclave's client deletes one at a time on close", took)
	}
	if r := s.do("DELETE", "/sandbox/"+id, nil); r.status != 404 {
		t.Errorf("second delete = %d, want 404", r.status)
	}
	if r := s.do("GET", "/sandbox/"+id, nil); r.status != 404 {
		t.Errorf("get after delete = %d, want 404", r.status)
	}
	if got := strings.TrimSpace(string(s.do("GET", "/sandboxes", nil).body)); got != "[]" {
		t.Errorf("list after delete = %s", got)
	}
}

func TestIntegrationMissingImageNamesTheFix(t *testing.T) {
	s := newEngineServer(t, nil)
	r := s.do("POST", "/sandbox/create", pythonClientDefaults("python:3.11-slim"))
	if r.status != http.StatusInternalServerError {
		t.Fatalf("= %d %s, want 500", r.status, r.body)
	}
	if d := r.detail(t); !strings.Contains(d, "python:3.11-slim") || !strings.Contains(d, sandbox.DefaultImage) {
		t.Errorf("detail %q should name the image and %s", d, sandbox.DefaultImage)
	}
}

func TestIntegrationArchiveAndDownload(t *testing.T) {
	s := newEngineServer(t, func(c *httpapi.Config) { c.Limits.MaxArchiveBytes = 64 << 10 })
	id := s.create(map[string]any{})

	archive := makeTar(t,
		tarEntry{name: "project/", mode: 0o755},
		tarEntry{name: "project/main.py", body: "print('from the upload')\n", mode: 0o644},
		tarEntry{name: "project/data/", mode: 0o700},
		tarEntry{name: "project/data/run.sh", body: "#!/bin/sh\necho ran\n", mode: 0o755},
		tarEntry{name: "top.txt", body: "top\n"},
	)
	var ok map[string]bool
	s.must("POST", "/sandbox/"+id+"/archive?target_dir=/sandbox/up", archive, &ok)
	if !ok["ok"] {
		t.Fatalf("archive answered %v", ok)
	}
	res := s.execute(id, "shell_executor", map[string]any{"command": "cd /sandbox/up && python3 project/main.py && project/data/run.sh && cat top.txt && stat -c %a project/data/run.sh"})
	if res.Status != "success" || res.Output != "from the upload\nran\ntop\n755\n" {
		t.Errorf("uploaded tree: %s %q %q", res.Status, res.Output, res.Error)
	}

	refused := []struct {
		name    string
		archive []byte
		want    int
		detail  string
	}{
		{"dot-dot", makeTar(t, tarEntry{name: "ok.txt", body: "x"}, tarEntry{name: "../escape.txt", body: "x"}), 400, ".."},
		{"nested dot-dot", makeTar(t, tarEntry{name: "a/../../escape.txt", body: "x"}), 400, ".."},
		{"absolute", makeTar(t, tarEntry{name: "/etc/passwd", body: "x"}), 400, "absolute"},
		{"symlink", makeTar(t, tarEntry{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"}), 400, "link"},
		{"hard link", makeTar(t, tarEntry{name: "hard", typ: tar.TypeLink, link: "top.txt"}), 400, "link"},
		{"device", makeTar(t, tarEntry{name: "null", typ: tar.TypeChar}), 400, "device"},
		{"fifo", makeTar(t, tarEntry{name: "pipe", typ: tar.TypeFifo}), 400, "device or pipe"},
		{"not a tar", []byte(strings.Repeat("garbage!", 100)), 400, "tar"},
		{"too large", makeTar(t, tarEntry{name: "big.bin", body: strings.Repeat("x", 80<<10)}), 413, "limit"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			r := s.do("POST", "/sandbox/"+id+"/archive?target_dir=/sandbox/bad", tc.archive)
			if r.status != tc.want || !strings.Contains(r.detail(t), tc.detail) {
				t.Errorf("= %d %s, want %d mentioning %q", r.status, r.body, tc.want, tc.detail)
			}
		})
	}
	if res := s.execute(id, "file_operation", map[string]any{"operation": "exists", "file_path": "/sandbox/bad"}); res.Output != "does not exist" {
		t.Errorf("a refused archive wrote something: %s", res.Output)
	}
	if r := s.do("POST", "/sandbox/"+id+"/archive?target_dir=/etc/x", makeTar(t, tarEntry{name: "f", body: "x"})); r.status < 400 {
		t.Errorf("extracting onto the read-only root file system = %d, want an error", r.status)
	}

	t.Run("download a file", func(t *testing.T) {
		r := s.do("GET", "/sandbox/"+id+"/files?path=up/project/main.py", nil)
		if r.status != 200 || string(r.body) != "print('from the upload')\n" || r.header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("= %d %q (%s)", r.status, r.body, r.header.Get("Content-Type"))
		}
		if !strings.Contains(r.header.Get("Content-Disposition"), "main.py") {
			t.Errorf("Content-Disposition %q", r.header.Get("Content-Disposition"))
		}
	})
	t.Run("download a directory as tar", func(t *testing.T) {
		r := s.do("GET", "/sandbox/"+id+"/files?path=/sandbox/up", nil)
		if r.status != 200 || r.header.Get("Content-Type") != "application/x-tar" {
			t.Fatalf("= %d %s", r.status, r.header.Get("Content-Type"))
		}
		got := map[string]string{}
		tr := tar.NewReader(bytes.NewReader(r.body))
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(tr)
			got[hdr.Name] = fmt.Sprintf("%o:%s", hdr.Mode, data)
		}
		want := map[string]string{
			"project/": "755:", "project/main.py": "644:print('from the upload')\n", "project/data/": "700:",
			"project/data/run.sh": "755:#!/bin/sh\necho ran\n", "top.txt": "644:top\n",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("tar entries:\n%v\nwant:\n%v", got, want)
		}
	})
	if r := s.do("GET", "/sandbox/"+id+"/files?path=nope.txt", nil); r.status != 404 {
		t.Errorf("download of a missing file = %d %s", r.status, r.body)
	}
}

func TestIntegrationPool(t *testing.T) {
	s := newEngineServer(t, nil)

	r := s.do("POST", "/pool/execute?tool_name=python_executor&timeout=0.5", map[string]string{"code": "print(1)"})
	if r.status != http.StatusConflict || !strings.Contains(r.detail(t), "initialize") {
		t.Fatalf("empty pool = %d %s, want an error saying to initialize it", r.status, r.body)
	}

	var pool struct {
		Message    string   `json:"message"`
		PoolSize   int      `json:"pool_size"`
		SandboxIDs []string `json:"sandbox_ids"`
	}
	// No body at all, as the Python client may send it.
	s.must("POST", "/pool/initialize?pool_size=2&sandbox_type=docker", nil, &pool)
	if pool.PoolSize != 2 || len(pool.SandboxIDs) != 2 || pool.Message == "" {
		t.Fatalf("initialize = %+v", pool)
	}
	for _, id := range pool.SandboxIDs {
		if got := s.info(id).Status; got != "idle" {
			t.Errorf("pooled sandbox %s is %s, want idle", id, got)
		}
	}

	run := func(params any, timeout string) (toolResult, response) {
		path := "/pool/execute?tool_name=python_executor"
		if timeout != "" {
			path += "&timeout=" + timeout
		}
		r := s.do("POST", path, params)
		var res toolResult
		if r.status == 200 {
			r.json(t, &res)
		}
		return res, r
	}
	if res, r := run(map[string]string{"code": "print('Hello from sandbox!')"}, "10"); res.Status != "success" || res.Output != "Hello from sandbox!\n" {
		t.Fatalf("execute in pool = %d %s", r.status, r.body)
	}

	t.Run("six at once on two sandboxes", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i := range 6 {
			wg.Go(func() {
				res, r := run(map[string]string{"code": fmt.Sprintf("print(%d * 7)", i)}, "60")
				if res.Status != "success" || res.Output != fmt.Sprintf("%d\n", i*7) {
					errs <- fmt.Errorf("call %d = %d %s", i, r.status, r.body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("a borrower's files are gone for the next", func(t *testing.T) {
		res, r := run(map[string]string{"code": "open('secret.txt','w').write('mine'); open('/tmp/scratch','w').write('x'); print('ok')"}, "10")
		if res.Status != "success" {
			t.Fatalf("write = %d %s", r.status, r.body)
		}
		// Clean-up runs after the answer: wait until both are free again, then look in each.
		waitPoolFree(t, s, 2)
		for _, id := range pool.SandboxIDs {
			for _, f := range []string{"secret.txt", "/tmp/scratch"} {
				if got := s.execute(id, "file_operation", map[string]any{"operation": "exists", "file_path": f}); got.Output != "does not exist" {
					t.Errorf("sandbox %s still has %s", id, f)
				}
			}
		}
		if res, _ := run(map[string]string{"code": "import os; print(sorted(os.listdir('.')))"}, "10"); res.Output != "[]\n" {
			t.Errorf("next borrower sees %q", res.Output)
		}
	})

	t.Run("timeout waiting for a sandbox is 408", func(t *testing.T) {
		waitPoolFree(t, s, 2)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { run(map[string]string{"code": "import time; time.sleep(3)"}, "10") })
		}
		deadline := time.Now().Add(10 * time.Second)
		for !allBusy(t, s, pool.SandboxIDs) {
			if time.Now().After(deadline) {
				t.Fatal("the two long calls never occupied the pool")
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, r := run(map[string]string{"code": "print(1)"}, "0.3")
		if r.status != http.StatusRequestTimeout || !strings.Contains(r.detail(t), "Timeout waiting for available sandbox") {
			t.Errorf("= %d %s, want 408 Timeout waiting for available sandbox", r.status, r.body)
		}
		wg.Wait()
	})

	var st struct {
		PoolSize int `json:"pool_size"`
	}
	s.must("GET", "/stats", nil, &st)
	if st.PoolSize != 2 {
		t.Errorf("stats pool_size = %d", st.PoolSize)
	}
	var again struct {
		SandboxIDs []string `json:"sandbox_ids"`
	}
	s.must("POST", "/pool/initialize?pool_size=2", map[string]any{}, &again)
	if !slices.Equal(again.SandboxIDs, pool.SandboxIDs) {
		t.Errorf("initializing again to the same size made new sandboxes: %v then %v", pool.SandboxIDs, again.SandboxIDs)
	}
}

// waitPoolFree waits until n pooled sandboxes are free (cleaned and back in the pool).
func waitPoolFree(t *testing.T, s *server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st struct {
			PoolAvailable int `json:"pool_available"`
		}
		s.must("GET", "/stats", nil, &st)
		if st.PoolAvailable == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pooled sandboxes free, want %d", st.PoolAvailable, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allBusy(t *testing.T, s *server, ids []string) bool {
	t.Helper()
	for _, id := range ids {
		if s.info(id).Status != "busy" {
			return false
		}
	}
	return true
}

// An MCP session's sandbox (owned by the session id) is invisible and unreachable over REST.
func TestIntegrationOwnership(t *testing.T) {
	s := newEngineServer(t, nil)
	theirs, err := s.manager.Create(t.Context(), "mcp-session-7f3c", sandbox.TypeDocker, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mine := s.create(map[string]any{})
	id := theirs.ID()
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/sandbox/" + id, nil},
		{"POST", "/sandbox/" + id + "/stop", nil},
		{"GET", "/sandbox/" + id + "/tools", nil},
		{"GET", "/sandbox/" + id + "/files?path=/sandbox", nil},
		{"POST", "/sandbox/" + id + "/archive", makeTar(t, tarEntry{name: "x", body: "x"})},
		{"POST", "/sandbox/tool/execute", map[string]any{"sandbox_id": id, "tool_name": "shell_executor", "parameters": map[string]any{"command": "id"}}},
		{"DELETE", "/sandbox/" + id, nil},
	} {
		if r := s.do(tc.method, tc.path, tc.body); r.status != 404 {
			t.Errorf("%s %s on another owner's sandbox = %d %s, want 404", tc.method, tc.path, r.status, r.body)
		}
	}
	var list []info
	s.must("GET", "/sandboxes", nil, &list)
	if len(list) != 1 || list[0].ID != mine {
		t.Errorf("REST list shows %+v, want only %s", list, mine)
	}
	if got := theirs.Info().Status; got != sandbox.StatusRunning {
		t.Errorf("the session's sandbox is %s after the REST attempts, want running", got)
	}
}

func TestIntegrationMetrics(t *testing.T) {
	s := newEngineServer(t, nil)
	id := s.create(map[string]any{})
	s.execute(id, "python_executor", map[string]any{"code": "print(1)"})
	s.execute(id, "shell_executor", map[string]any{"command": "sleep 5", "timeout": 0.2})
	r := s.do("GET", "/metrics", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("= %d %s", r.status, r.header.Get("Content-Type"))
	}
	text := string(r.body)
	for _, want := range []string{
		`enclave_sandboxes{state="running"} 1`,
		`enclave_tool_calls_total{tool="python_executor",status="success"} 1`,
		`enclave_tool_calls_total{tool="shell_executor",status="timeout"} 1`,
		`enclave_tool_call_duration_seconds_count{tool="python_executor"} 1`,
		`enclave_tool_call_duration_seconds_bucket{tool="python_executor",le="+Inf"} 1`,
		`enclave_tool_timeouts_total{tool="shell_executor"} 1`,
		`# TYPE enclave_oom_kills_total counter`,
		`enclave_pool_wait_timeouts_total 0`,
		`enclave_http_requests_total{route="POST /sandbox/tool/execute",code="200"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
}
