package sandbox_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/internal/egresstest"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// egressTestImage has the clients the egress tests drive: curl, pip, git and requests, on
// the default image's python3. It is built from Debian packages when missing, like the
// default images, and kept by tag.
const egressTestImage = "enclave/egress-test:bookworm"

func requireEgressImage(t *testing.T, e *sandbox.Docker) {
	t.Helper()
	present, err := e.ImagePresent(t.Context(), egressTestImage)
	if err != nil {
		t.Fatal(err)
	}
	if present {
		return
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skipf("image %s is missing and debootstrap is not installed to build it", egressTestImage)
	}
	spec := sandbox.ImageSpec{
		Tag: egressTestImage, Suite: "bookworm", Mirror: sandbox.DefaultMirror, Include: []string{"python3"},
		Setup: []string{"export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && " +
			"apt-get install -y -qq --no-install-recommends python3-pip python3-requests curl ca-certificates git"},
		Changes: []string{"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8", "WORKDIR /sandbox", `CMD ["/bin/sh"]`},
	}
	var out bytes.Buffer
	if err := e.BuildImage(t.Context(), spec, &out); err != nil {
		t.Fatalf("building %s: %v\n%s", egressTestImage, err, out.String())
	}
}

// wheel builds a tiny pure-Python wheel: package tinypkg, whose VALUE is "egress-ok".
func wheel(t *testing.T) []byte {
	t.Helper()
	files := []struct{ name, body string }{
		{"tinypkg/__init__.py", "VALUE = 'egress-ok'\n"},
		{"tinypkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n"},
		{"tinypkg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: enclave-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, f.body)
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	record.WriteString("tinypkg-0.1.dist-info/RECORD,,\n")
	w, _ := zw.Create("tinypkg-0.1.dist-info/RECORD")
	_, _ = io.WriteString(w, record.String())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// packageIndex serves a PEP 503 simple index holding the wheel, and /hello.
func packageIndex(t *testing.T) *httptest.Server {
	whl := wheel(t)
	sum := sha256.Sum256(whl)
	const file = "tinypkg-0.1-py3-none-any.whl"
	mux := http.NewServeMux()
	mux.HandleFunc("/simple/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!DOCTYPE html><html><body><a href="tinypkg/">tinypkg</a></body></html>`)
	})
	mux.HandleFunc("/simple/tinypkg/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!DOCTYPE html><html><body><a href="/files/%s#sha256=%s">%s</a></body></html>`, file, hex.EncodeToString(sum[:]), file)
	})
	mux.HandleFunc("/files/"+file, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(whl) })
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from the host") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// gitServer serves a bare repository holding README ("cloned through the proxy") over
// git's smart HTTP protocol (git http-backend, as CGI), as /repo.git.
func gitServer(t *testing.T) *httptest.Server {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("git http-backend is not installed on this host: %v", err)
	}
	root, work := t.TempDir(), t.TempDir()
	git := func(dir string, args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(work, "init", "-q", "-b", "main")
	if err := os.WriteFile(work+"/README", []byte("cloned through the proxy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "README")
	git(work, "commit", "-q", "-m", "first")
	git(root, "clone", "-q", "--bare", work, "repo.git")
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	return srv
}

func port(t *testing.T, rawURL string) string {
	t.Helper()
	i := strings.LastIndex(rawURL, ":")
	return rawURL[i+1:]
}

// run runs a shell command in sb and returns its output, stdout then stderr.
func run(t *testing.T, sb *sandbox.AgentSandbox, script string) (string, int) {
	t.Helper()
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, TimeoutMS: 120_000}, nil)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return res.Stdout + res.Stderr, res.ExitCode
}

// scanScript searches everything a program in the sandbox can read for the secret:
// environment, every file, and each process's environ, cmdline and readable memory. The
// secret arrives reversed, so that the scanner's own command line does not hold it, and
// the scanner skips its own process, which must hold it to search for it.
const scanScript = `
import os, sys
secret = sys.argv[1][::-1].encode()
me = str(os.getpid())
found, mems = [], 0
for k, v in os.environ.items():
    if secret in (k + "=" + v).encode(): found.append("env " + k)
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == me: continue
    for f in ("environ", "cmdline"):
        try:
            if secret in open("/proc/%s/%s" % (pid, f), "rb").read(): found.append("/proc/%s/%s" % (pid, f))
        except OSError: pass
    try:
        maps = open("/proc/%s/maps" % pid).read().splitlines()
        mem = open("/proc/%s/mem" % pid, "rb", 0)
    except OSError:
        continue
    mems += 1
    for line in maps:
        addr, perms = line.split()[:2]
        if "r" not in perms: continue
        lo, hi = (int(x, 16) for x in addr.split("-"))
        try:
            mem.seek(lo); chunk = mem.read(hi - lo)
        except (OSError, ValueError, OverflowError):
            continue
        if chunk and secret in chunk: found.append("/proc/%s/mem" % pid)
files = 0
for root, dirs, names in os.walk("/"):
    if root == "/": dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for n in names:
        p = os.path.join(root, n)
        try:
            if os.path.islink(p) or not os.path.isfile(p): continue
            with open(p, "rb") as fh:
                files += 1
                if secret in fh.read(): found.append(p)
        except OSError: pass
print("FOUND %s" % found if found else "clean: %d files, %d process memories" % (files, mems))
`

// TestIntegrationEgress drives a network-less sandbox's egress end to end: the servers
// are the test's, on the host's loopback; the server dials them, the sandbox cannot.
func TestIntegrationEgress(t *testing.T) {
	testenv.RequireDocker(t)
	const secret = "sk-live-7c1f0e6a9b2d4c58"
	ca := egresstest.NewCA(t)
	var mu sync.Mutex
	var apiAuth []string
	api := ca.Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		apiAuth = append(apiAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprint(w, "api-ok")
	}), "api.test")
	plain := ca.Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain-ok auth=%q", r.Header.Get("Authorization"))
	}), "plain.test")
	index := packageIndex(t)
	gitSrv := gitServer(t)
	// A service of the host's own that no rule lists by address: the SSRF target.
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "host secret service") }))
	defer private.Close()
	apiPort, plainPort, indexPort, privatePort := port(t, api.URL), port(t, plain.URL), port(t, index.URL), port(t, private.URL)
	gitPort := port(t, gitSrv.URL)

	svc := egress.NewService(egress.Options{
		RootCAs: ca.Pool,
		Resolver: egresstest.Resolver{
			"api.test": "127.0.0.1", "plain.test": "127.0.0.1", "index.test": "127.0.0.1", "sneaky.test": "127.0.0.1", "git.test": "127.0.0.1",
		},
		LookupEnv: func(k string) (string, bool) { return secret, k == "ENCLAVE_TEST_API_KEY" },
	})
	e := testenv.EngineWith(t, sandbox.DockerOptions{Egress: svc})
	requireEgressImage(t, e)
	policy := sandbox.Policy{Egress: &egress.Policy{
		Allow: []string{
			"api.test:" + apiPort, "plain.test:" + plainPort, "index.test:" + indexPort, "sneaky.test:" + privatePort,
			"127.0.0.1:" + apiPort, "127.0.0.1:" + plainPort, "127.0.0.1:" + indexPort,
			"git.test:" + gitPort, "127.0.0.1:" + gitPort,
		},
		Credentials: []egress.Credential{{Host: "api.test", Header: "Authorization", Value: "Bearer ${env:ENCLAVE_TEST_API_KEY}", PlaceholderEnv: "API_KEY"}},
	}}
	sb := testenv.SandboxWith(t, e, sandbox.Config{Image: egressTestImage, NetworkEnabled: true, Egress: &sandbox.EgressConfig{}}, policy)
	if _, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileWrite, Path: "test-ca.pem", Data: ca.PEM}); err != nil {
		t.Fatal(err)
	}

	t.Run("no network interface but loopback", func(t *testing.T) {
		out, _ := run(t, sb, "ls /sys/class/net")
		if strings.TrimSpace(out) != "lo" {
			t.Errorf("interfaces: %q, want lo only", out)
		}
	})
	t.Run("plain HTTP with urllib", func(t *testing.T) {
		out, code := run(t, sb, "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://index.test:"+indexPort+"/hello').read().decode())\"")
		if code != 0 || !strings.Contains(out, "hello from the host") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("pip installs from the package index", func(t *testing.T) {
		out, code := run(t, sb, "python3 -m pip install --no-cache-dir --disable-pip-version-check --break-system-packages --target /sandbox/site "+
			"--trusted-host index.test --index-url http://index.test:"+indexPort+"/simple/ tinypkg && PYTHONPATH=/sandbox/site python3 -c 'import tinypkg; print(tinypkg.VALUE)'")
		if code != 0 || !strings.Contains(out, "egress-ok") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("git clones over smart HTTP", func(t *testing.T) {
		out, code := run(t, sb, "git clone -q http://git.test:"+gitPort+"/repo.git /sandbox/clone && cat /sandbox/clone/README")
		if code != 0 || !strings.Contains(out, "cloned through the proxy") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("curl and requests reach the API with the operator's credential", func(t *testing.T) {
		out, code := run(t, sb, `curl -sS --fail-with-body -H "Authorization: Bearer $API_KEY" https://api.test:`+apiPort+`/v1`)
		if code != 0 || out != "api-ok" {
			t.Errorf("curl: exit %d: %s", code, out)
		}
		out, code = run(t, sb, `python3 -c "import os, requests; print(requests.get('https://api.test:`+apiPort+`/v1', headers={'Authorization': 'Bearer ' + os.environ['API_KEY']}).text)"`)
		if code != 0 || !strings.Contains(out, "api-ok") {
			t.Errorf("requests: exit %d: %s", code, out)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(apiAuth) < 2 || apiAuth[0] != "Bearer "+secret || apiAuth[1] != "Bearer "+secret {
			t.Errorf("the API saw %q, want the operator's credential on both requests", apiAuth)
		}
	})
	t.Run("TLS to a host without a rule is not intercepted", func(t *testing.T) {
		out, code := run(t, sb, `python3 -c "
import ssl, urllib.request
ctx = ssl.create_default_context(cafile='test-ca.pem')
r = urllib.request.urlopen(urllib.request.Request('https://plain.test:`+plainPort+`/', headers={'Authorization': 'mine'}), context=ctx)
print(r.read().decode())
"`)
		// Trusting only the test CA, the handshake succeeds only with the upstream's own
		// certificate; the header arrives as the program sent it.
		if code != 0 || !strings.Contains(out, `plain-ok auth="mine"`) {
			t.Errorf("exit %d: %s", code, out)
		}
		out, _ = run(t, sb, `curl -sS https://plain.test:`+plainPort+`/ 2>&1`)
		if !strings.Contains(out, "certificate") {
			t.Errorf("curl trusting the sandbox's bundle (not the test CA) got through: %s", out)
		}
	})
	t.Run("refused hosts fail with the policy's message", func(t *testing.T) {
		for _, tc := range []struct{ name, cmd, want string }{
			{"curl http", "curl -sS http://evil.test/", "enclave-mcp egress policy: evil.test is not in the sandbox's egress allow-list"},
			{"urllib https", `python3 -c "import urllib.request; urllib.request.urlopen('https://evil.test/')"`, "egress policy: evil.test"},
			{"pip", "python3 -m pip download --no-cache-dir --disable-pip-version-check --retries 1 --index-url https://pypi.org/simple/ six", "egress policy: pypi.org"},
			{"SSRF by a listed name", "curl -sS http://sneaky.test:" + privatePort + "/", "sneaky.test resolves to 127.0.0.1, in 127.0.0.0/8"},
			{"SSRF by address", "curl -sS --noproxy '' -x http://" + sandbox.EgressProxyAddr + " http://127.0.0.1:" + privatePort + "/", "egress policy"},
			{"metadata", "curl -sS --noproxy '' -x http://" + sandbox.EgressProxyAddr + " http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not in"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, code := run(t, sb, tc.cmd+" 2>&1")
				if strings.Contains(out, "host secret service") || !strings.Contains(out, tc.want) {
					t.Errorf("exit %d: %s\nwant %q", code, out, tc.want)
				}
			})
		}
	})
	t.Run("the credential is nowhere in the sandbox", func(t *testing.T) {
		reverse := func(s string) string {
			r := []rune(s)
			for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
				r[i], r[j] = r[j], r[i]
			}
			return string(r)
		}
		if _, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileWrite, Path: "scan.py", Data: []byte(scanScript)}); err != nil {
			t.Fatal(err)
		}
		// A program that called the API through the proxy and lives on: its memory is
		// searched too.
		if _, err := sb.Exec(t.Context(), sandbox.ExecRequest{Background: true, Argv: []string{"python3", "-c",
			"import os, time, requests\n" +
				"r = requests.get('https://api.test:" + apiPort + "/v1', headers={'Authorization': 'Bearer ' + os.environ['API_KEY']})\n" +
				"open('/tmp/called', 'w').write(r.text)\n" +
				"time.sleep(600)\n"}}, nil); err != nil {
			t.Fatal(err)
		}
		testwait.Until(t, 30*time.Second, "the background API call", func() bool {
			res, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileExists, Path: "/tmp/called"})
			return err == nil && res.Exists
		})
		// The scanner finds what is there: the placeholder, in the environment and in the
		// background program's memory.
		out, _ := run(t, sb, "python3 scan.py '"+reverse(egress.Placeholder)+"'")
		if !strings.HasPrefix(out, "FOUND") || !strings.Contains(out, "/mem'") || !strings.Contains(out, "env API_KEY") {
			t.Fatalf("the scanner did not find the placeholder in the environment and a process's memory: %s", out)
		}
		out, code := run(t, sb, "python3 scan.py '"+reverse(secret)+"'")
		if code != 0 || !strings.HasPrefix(out, "clean") || strings.Contains(out, " 0 process memories") || strings.Contains(out, " 1 process memories") {
			t.Errorf("exit %d: %s", code, out)
		}
		t.Log(out)
		out, _ = run(t, sb, "echo $API_KEY")
		if strings.TrimSpace(out) != egress.Placeholder {
			t.Errorf("API_KEY = %q, want the placeholder", out)
		}
		// Nor in what the engine stores of the container (environment, labels).
		insp, err := exec.Command("docker", "inspect", sb.ContainerID()).CombinedOutput()
		if err != nil || strings.Contains(string(insp), secret) || !strings.Contains(string(insp), sandbox.LabelEgress) {
			t.Errorf("docker inspect: %v; holds the secret: %v; has the egress label: %v", err, strings.Contains(string(insp), secret), strings.Contains(string(insp), sandbox.LabelEgress))
		}
	})
	t.Run("the egress log and the totals", func(t *testing.T) {
		rep := sb.EgressReport()
		if rep == nil || rep.Allowed == 0 || rep.Refused < 5 || rep.Received == 0 {
			t.Fatalf("report = %+v", rep)
		}
		var sawRefused, sawIntercepted bool
		for _, e := range rep.Recent {
			sawRefused = sawRefused || (!e.Allowed && e.Host == "evil.test")
			sawIntercepted = sawIntercepted || (e.Intercepted && e.Host == "api.test" && e.Status == 200)
		}
		if !sawRefused || !sawIntercepted {
			t.Errorf("log lacks a refusal of evil.test (%v) or an intercepted API call (%v): %+v", sawRefused, sawIntercepted, rep.Recent)
		}
		if _, ok := sb.Info().Metadata["egress"]; !ok {
			t.Error("the sandbox's info has no egress report")
		}
		if st := svc.Stats(); st.Allowed == 0 || st.Refused == 0 || st.Intercepted == 0 {
			t.Errorf("service stats = %+v", st)
		}
	})
}

// TestIntegrationEgressPoolReset: a pooled sandbox's next borrower sees none of the last
// one's egress log, and gets its trust bundle back whatever the last one wrote over it.
func TestIntegrationEgressPoolReset(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
		Policy: sandbox.Policy{Egress: &egress.Policy{Allow: []string{"api.test"},
			Credentials: []egress.Credential{{Host: "api.test", Header: "Authorization", Value: "x"}}}},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	p := sandbox.NewPool(m, "egress-pool-test", sandbox.TypeDocker)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	ctx := t.Context()
	if _, err := p.Grow(ctx, 1, sandbox.Config{Runtime: testenv.Runtime(), Egress: &sandbox.EgressConfig{}}); err != nil {
		t.Fatal(err)
	}
	first, err := p.Borrow(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res, err := first.Exec(ctx, sandbox.ExecRequest{Argv: []string{"sh", "-c",
		`python3 -c "import urllib.request; urllib.request.urlopen('http://private-project.test/')"; echo junk > "$SSL_CERT_FILE"`}}, nil)
	if err != nil || !strings.Contains(res.Stderr, "egress policy") {
		t.Fatalf("the first borrower's refused call: %v %+v", err, res)
	}
	t.Logf("reset took %s", poolReturnAndWait(t, p, first))

	second, err := p.Borrow(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Return(second)
	if second.ID() != first.ID() {
		t.Fatalf("the pool replaced the sandbox instead of resetting it")
	}
	if info := second.Info(); strings.Contains(fmt.Sprint(info.Metadata["egress"]), "private-project.test") {
		t.Errorf("the next borrower sees the last one's egress log: %v", info.Metadata["egress"])
	}
	out, err := second.Exec(ctx, sandbox.ExecRequest{Argv: []string{"sh", "-c", `grep -c "BEGIN CERTIFICATE" "$SSL_CERT_FILE"`}}, nil)
	if err != nil || strings.TrimSpace(out.Stdout) == "0" || out.ExitCode != 0 {
		t.Errorf("the trust bundle after the reset: %v %+v", err, out)
	}
}
