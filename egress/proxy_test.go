package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/egresstest"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// startProxy serves p on a loopback listener, as the sandbox's agent would hand it
// connections, and returns the proxy's URL.
func startProxy(t *testing.T, p *Proxy) *url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); p.Close(); wg.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.Serve(c) }()
		}
	}()
	return &url.URL{Scheme: "http", Host: l.Addr().String()}
}

func newProxy(t *testing.T, opts Options, rules Rules) *Proxy {
	t.Helper()
	p, err := NewService(opts).NewProxy("test", rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// client is a program in the sandbox: it uses the proxy and trusts roots.
func client(t *testing.T, proxy *url.URL, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(t *testing.T, c *http.Client, u string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// echo answers with the request's Authorization header.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "auth=%q host=%s", r.Header.Get("Authorization"), r.Host)
})

func TestProxyPlainHTTP(t *testing.T) {
	up := httptest.NewServer(echo)
	defer up.Close()
	upURL, _ := url.Parse(up.URL)
	_, upPort, _ := net.SplitHostPort(upURL.Host)
	res := egresstest.Resolver{"web.test": "127.0.0.1"}

	for _, tc := range []struct {
		name   string
		allow  []string
		target string
		status int
		want   string
	}{
		{name: "listed address", allow: []string{"127.0.0.1:" + upPort}, target: up.URL, status: 200, want: "auth="},
		{name: "listed address other port", allow: []string{"127.0.0.1"}, target: up.URL, status: 403, want: "port " + upPort + " is not allowed"},
		{name: "listed CIDR and port", allow: []string{"127.0.0.0/8:" + upPort}, target: up.URL, status: 200, want: "auth="},
		{name: "unlisted host", allow: []string{"127.0.0.1"}, target: "http://evil.test/", status: 403,
			want: "enclave-mcp egress policy: evil.test is not in the sandbox's egress allow-list"},
		{name: "name to loopback refused", allow: []string{"web.test:" + upPort}, target: "http://web.test:" + upPort + "/", status: 403,
			want: "web.test resolves to 127.0.0.1, in 127.0.0.0/8"},
		{name: "name to listed loopback", allow: []string{"web.test:" + upPort, "127.0.0.1:" + upPort}, target: "http://web.test:" + upPort + "/", status: 200,
			want: "host=web.test:" + upPort},
		{name: "port not listed", allow: []string{"127.0.0.1:1"}, target: up.URL, status: 403, want: "is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, Options{Resolver: res}, Rules{Allow: tc.allow, Ports: []int{80, 443}})
			resp, body := get(t, client(t, startProxy(t, p), nil), tc.target)
			if resp == nil {
				t.Fatalf("request failed: %s", body)
			}
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, body, tc.status, tc.want)
			}
			// The log entry is written once the answer has gone out.
			testwait.Until(t, 10*time.Second, "the log entry", func() bool { return len(p.Report().Recent) > 0 })
			rep := p.Report()
			if len(rep.Recent) != 1 || rep.Recent[0].Allowed != (tc.status == 200) {
				t.Errorf("egress log = %+v, want one entry, allowed %v", rep.Recent, tc.status == 200)
			}
			if tc.status == 200 && (rep.Sent == 0 || rep.Received == 0) {
				t.Errorf("bytes not counted: %+v", rep)
			}
		})
	}
}

func TestProxyConnectRefusalNamesThePolicy(t *testing.T) {
	p := newProxy(t, Options{}, Rules{Allow: []string{"pypi.org"}})
	conn, err := net.Dial("tcp", startProxy(t, p).Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	// Clients show a CONNECT's status line, not its body: both name the policy and host.
	for _, s := range []string{resp.Status, string(body)} {
		if !strings.Contains(s, "egress policy") || !strings.Contains(s, "evil.test") {
			t.Errorf("%q does not name the policy and the host", s)
		}
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("status %d, want 403", resp.StatusCode)
	}
}

func TestProxyCredentialIsAddedAndTLSIntercepted(t *testing.T) {
	ca := egresstest.NewCA(t)
	var seen []string
	var mu sync.Mutex
	up := ca.Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}), "api.test")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "https://"))
	const secret = "s3cret-value"
	opts := Options{
		RootCAs:   ca.Pool,
		Resolver:  egresstest.Resolver{"api.test": "127.0.0.1"},
		LookupEnv: func(k string) (string, bool) { return secret, k == "API_KEY" },
	}
	p := newProxy(t, opts, Rules{
		Allow: []string{"api.test", "127.0.0.1"}, Ports: []int{443, mustAtoi(t, port)},
		Credentials: []Credential{{Host: "api.test", Header: "Authorization", Value: "Bearer ${env:API_KEY}"}},
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.CACertPEM()) {
		t.Fatal("the sandbox CA's PEM does not parse")
	}
	c := client(t, startProxy(t, p), roots)
	for range 2 { // two requests on one intercepted connection
		resp, body := get(t, c, "https://api.test:"+port+"/v1", "Authorization", "Bearer "+Placeholder)
		if resp == nil || resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("got %v %q", resp, body)
		}
		if issuer := resp.TLS.PeerCertificates[0].Issuer.CommonName; !strings.Contains(issuer, "enclave-mcp egress CA") {
			t.Errorf("the sandbox saw a certificate from %q, want the sandbox's CA", issuer)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "Bearer "+secret || seen[1] != "Bearer "+secret {
		t.Errorf("the upstream saw %q, want the operator's credential twice", seen)
	}
	testwait.Until(t, 10*time.Second, "the log entries", func() bool { return p.Report().Allowed == 2 })
	if rep := p.Report(); rep.Allowed != 2 || !rep.Recent[0].Intercepted {
		t.Errorf("report = %+v", rep)
	}

	// The sandbox's CA cannot vouch for a host outside the credential rules, whoever holds
	// its key: its name constraints forbid it.
	leaf, err := p.ca.leaf("evil.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(leaf.Certificate[0])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "evil.test"}); err == nil {
		t.Error("a certificate for evil.test from the sandbox's CA verified")
	}
}

func TestProxyPassesTLSThroughWithoutARule(t *testing.T) {
	ca := egresstest.NewCA(t)
	up := ca.Server(t, echo, "plain.test")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "https://"))
	p := newProxy(t, Options{RootCAs: ca.Pool, Resolver: egresstest.Resolver{"plain.test": "127.0.0.1"}}, Rules{
		Allow: []string{"plain.test", "api.test", "127.0.0.1"}, Ports: []int{mustAtoi(t, port)},
		Credentials: []Credential{{Host: "api.test", Header: "Authorization", Value: "Bearer x"}},
	})
	client := client(t, startProxy(t, p), ca.Pool)
	resp, body := get(t, client, "https://plain.test:"+port+"/", "Authorization", "Bearer mine")
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("got %v %q", resp, body)
	}
	if issuer := resp.TLS.PeerCertificates[0].Issuer.CommonName; issuer != "egress test CA" {
		t.Errorf("the client saw a certificate from %q, want the upstream's own", issuer)
	}
	if !strings.Contains(body, `auth="Bearer mine"`) {
		t.Errorf("the upstream saw %q, want the client's own header untouched", body)
	}
	// A tunnel is logged when it ends, with its bytes.
	client.Transport.(*http.Transport).CloseIdleConnections()
	testwait.Until(t, 10*time.Second, "the tunnel's log entry", func() bool { return len(p.Report().Recent) == 1 })
	if e := p.Report().Recent[0]; e.Intercepted || e.Method != "CONNECT" || !e.Allowed || e.Sent == 0 || e.Received == 0 {
		t.Errorf("log entry = %+v, want one CONNECT passed through, with its bytes", e)
	}
}

func TestProxyMissingCredentialIsAnError(t *testing.T) {
	up := httptest.NewServer(echo)
	defer up.Close()
	port := up.URL[strings.LastIndex(up.URL, ":")+1:]
	p := newProxy(t, Options{Resolver: egresstest.Resolver{"api.test": "127.0.0.1"}, LookupEnv: func(string) (string, bool) { return "", false }}, Rules{
		Allow:       []string{"api.test:" + port, "127.0.0.1:" + port},
		Credentials: []Credential{{Host: "api.test", Header: "Authorization", Value: "${env:NOPE}"}},
	})
	resp, body := get(t, client(t, startProxy(t, p), nil), "http://api.test:"+port+"/")
	if resp == nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "the server's environment has no NOPE") {
		t.Fatalf("got %v %q, want 502 naming the missing variable", resp, body)
	}
}

func TestProxyLimits(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 256<<10))
	}))
	defer up.Close()
	port := mustAtoi(t, up.URL[strings.LastIndex(up.URL, ":")+1:])

	t.Run("bytes", func(t *testing.T) {
		// The limit is checked before each write of up to 64 KiB.
		p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}, Ports: []int{port}, MaxBytes: 100 << 10})
		c := client(t, startProxy(t, p), nil)
		// The first answer passes the limit on its way and is cut.
		if resp, body := get(t, c, up.URL); resp != nil && len(body) == 256<<10 {
			t.Fatalf("a 256 KiB answer passed a 100 KiB limit whole")
		}
		resp, body := get(t, c, up.URL)
		if resp == nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "the most its egress policy allows") {
			t.Fatalf("after the limit: %v %q, want 403 naming the limit", resp, body)
		}
	})
	t.Run("connections", func(t *testing.T) {
		p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}, Ports: []int{port}, MaxConnections: 1})
		proxy := startProxy(t, p)
		held, err := net.Dial("tcp", proxy.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		fmt.Fprintf(held, "CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port)
		if resp, err := http.ReadResponse(bufio.NewReader(held), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first connection: %v %v", resp, err)
		}
		resp, body := get(t, client(t, proxy, nil), up.URL)
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "1 proxy connections open") {
			t.Fatalf("second connection: %v %q", resp, body)
		}
	})
	t.Run("headers", func(t *testing.T) {
		p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}})
		resp, body := get(t, client(t, startProxy(t, p), nil), up.URL, "X-Big", strings.Repeat("a", maxHeaderBytes))
		if resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("got %v %q, want 431", resp, body)
		}
	})
	t.Run("not a proxy request", func(t *testing.T) {
		p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}})
		resp, body := get(t, http.DefaultClient, startProxy(t, p).String()+"/direct")
		if resp == nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "absolute") {
			t.Fatalf("got %v %q, want 400 explaining", resp, body)
		}
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

func TestPolicyRoots(t *testing.T) {
	ca := egresstest.NewCA(t)
	dir := t.TempDir()
	good, bad := dir+"/ca.pem", dir+"/junk.pem"
	if err := os.WriteFile(good, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if roots, err := (Policy{}).Roots(); roots != nil || err != nil {
		t.Errorf("no file: %v, %v; want nil (the system's roots)", roots, err)
	}
	roots, err := Policy{UpstreamCAFile: good}.Roots()
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, "internal.test")
	cert, _ := x509.ParseCertificate(leaf.Certificate[0])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "internal.test"}); err != nil {
		t.Errorf("a certificate of the operator's CA does not verify: %v", err)
	}
	for _, f := range []string{bad, dir + "/missing.pem"} {
		if _, err := (Policy{UpstreamCAFile: f}).Roots(); err == nil || !strings.Contains(err.Error(), "upstream_ca_file") {
			t.Errorf("%s: %v, want an error naming the field", f, err)
		}
	}
}

// recordingResolver counts lookups.
type recordingResolver struct {
	egresstest.Resolver
	mu     sync.Mutex
	lookup []string
}

func (r *recordingResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.lookup = append(r.lookup, host)
	r.mu.Unlock()
	return r.Resolver.LookupNetIP(ctx, network, host)
}

// TestProxyDoesNotLookUpUnlistedNames: the server's resolver is no channel out of the
// sandbox (data encoded in a name under an attacker's domain), CIDR entries or not.
func TestProxyDoesNotLookUpUnlistedNames(t *testing.T) {
	res := &recordingResolver{Resolver: egresstest.Resolver{"listed.test": "203.0.113.1"}}
	p := newProxy(t, Options{Resolver: res, DialTimeout: time.Second}, Rules{Allow: []string{"listed.test", "0.0.0.0/0", "::/0"}})
	c := client(t, startProxy(t, p), nil)
	resp, body := get(t, c, "http://secret-data.attacker.test/")
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("got %v %q, want 403", resp, body)
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if len(res.lookup) != 0 {
		t.Errorf("the server looked up %q", res.lookup)
	}
}

func TestProxyReset(t *testing.T) {
	up := httptest.NewServer(echo)
	defer up.Close()
	p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}, Ports: []int{mustAtoi(t, up.URL[strings.LastIndex(up.URL, ":")+1:])}})
	proxy := startProxy(t, p)
	if resp, body := get(t, client(t, proxy, nil), up.URL); resp == nil || resp.StatusCode != 200 {
		t.Fatalf("%v %q", resp, body)
	}
	testwait.Until(t, 10*time.Second, "the log entry", func() bool { return p.Report().Allowed == 1 })
	p.Reset()
	if rep := p.Report(); rep.Allowed != 0 || len(rep.Recent) != 0 || rep.Received != 0 || p.bytes.Load() != 0 {
		t.Errorf("after Reset: %+v, %d bytes", rep, p.bytes.Load())
	}
	// The client's kept-alive stream was ended; it may still be leaving the set.
	testwait.Until(t, 10*time.Second, "the old streams to end", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.open) == 0
	})
}

func TestProxyExpectContinue(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d bytes, expect=%q", len(b), r.Header.Get("Expect"))
	}))
	defer up.Close()
	p := newProxy(t, Options{}, Rules{Allow: []string{"127.0.0.1"}, Ports: []int{mustAtoi(t, up.URL[strings.LastIndex(up.URL, ":")+1:])}})
	conn, err := net.Dial("tcp", startProxy(t, p).Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", up.URL)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("first line %q, %v; want 100 Continue before the body", line, err)
	}
	_, _ = br.ReadString('\n') // the blank line ending the interim answer
	fmt.Fprint(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != `got 5 bytes, expect=""` {
		t.Errorf("the upstream answered %q", body)
	}
}
