package sandbox_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestEgressThroughTheAgent runs the whole path on the process backend (no engine): a
// client at the agent's egress address, the agent's stream, the server's proxy, the
// destination. The Docker test drives the same path from inside a container.
func TestEgressThroughTheAgent(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("egress ", 100000)) // 700 KB: many stream messages
	}))
	defer up.Close()
	upPort := up.URL[strings.LastIndex(up.URL, ":")+1:]
	b := testenv.Process(t)
	sb := testenv.SandboxWith(t, b, sandbox.Config{Egress: &sandbox.EgressConfig{}},
		sandbox.Policy{Egress: &egress.Policy{Allow: []string{"127.0.0.1:" + upPort}}})
	if sb.EgressAddr() == "" {
		t.Fatal("the agent reports no egress address")
	}
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: sb.EgressAddr()})}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	for range 3 { // keep-alive: several requests on one stream
		resp, err := c.Get(up.URL + "/big")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(body) != 700000 {
			t.Fatalf("got %d, %d bytes, %v", resp.StatusCode, len(body), err)
		}
	}
	resp, err := c.Get("http://evil.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "egress policy: evil.test") {
		t.Errorf("got %d %q, want a refusal naming the policy and host", resp.StatusCode, body)
	}
	// An exchange is logged once its answer is out.
	testwait.Until(t, 10*time.Second, "the log entries", func() bool { return sb.EgressReport().Allowed == 3 })
	rep := sb.EgressReport()
	if rep == nil || rep.Allowed != 3 || rep.Refused != 1 || rep.Received < 3*700000 {
		t.Errorf("report = %+v", rep)
	}
}
