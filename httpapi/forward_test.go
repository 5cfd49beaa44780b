package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
)

// peersAt locates every sandbox in ids at url, for its one owner.
type peersAt struct {
	url, owner  string
	ids         map[string]bool
	mu          sync.Mutex
	asked       []string
	unreachable []string
}

func (p *peersAt) Locate(_ context.Context, id, owner string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, id)
	if !p.ids[id] || owner != p.owner {
		return "", nil
	}
	return p.url, nil
}

func (p *peersAt) Unreachable(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unreachable = append(p.unreachable, id)
}

// seen is one request the other replica received.
type seen struct {
	method, path, body, auth, forwardedBy string
}

func TestForwardToPeer(t *testing.T) {
	var mu sync.Mutex
	var got []seen
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.RequestURI(), string(body), r.Header.Get("Authorization"), r.Header.Get(httpapi.ForwardedHeader)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"from":"other"}`)
	}))
	t.Cleanup(other.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close() // a replica that died: nothing listens there any more

	s := newServer(t, refusingCreator, nil)
	peers := &peersAt{url: other.URL, owner: httpapi.RESTOwner, ids: map[string]bool{"aaa111": true}}
	deadPeers := &peersAt{url: goneURL, owner: httpapi.RESTOwner, ids: map[string]bool{"aaa111": true}}

	const execute = `{"sandbox_id":"aaa111","tool_name":"shell_executor","parameters":{"command":"echo hi"}}`
	const mcpCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"shell_executor","arguments":{"sandbox":"aaa111","command":"echo hi"}}}`
	cases := []struct {
		name    string
		peers   *peersAt
		method  string
		path    string
		body    string
		headers map[string]string
		noAuth  bool
		// forwarded is the request the other replica must see; empty: none reaches it.
		forwarded string
		status    int
		asked     bool // whether Peers was asked at all
	}{
		{name: "get another replica's sandbox", method: "GET", path: "/sandbox/aaa111", forwarded: "GET /sandbox/aaa111", status: 200, asked: true},
		{name: "delete", method: "DELETE", path: "/sandbox/aaa111", forwarded: "DELETE /sandbox/aaa111", status: 200, asked: true},
		{name: "download keeps its query", method: "GET", path: "/sandbox/aaa111/files?path=a.txt", forwarded: "GET /sandbox/aaa111/files?path=a.txt", status: 200, asked: true},
		{name: "execute names it in the body", method: "POST", path: "/sandbox/tool/execute", body: execute, forwarded: "POST /sandbox/tool/execute", status: 200, asked: true},
		{name: "stateless MCP call names the handle", method: "POST", path: "/mcp", body: mcpCall, forwarded: "POST /mcp", status: 200, asked: true},
		{name: "session MCP call stays", method: "POST", path: "/mcp", body: mcpCall, headers: map[string]string{"Mcp-Session-Id": "s1"}, status: 404, asked: false},
		{name: "an unknown id is not found here", method: "GET", path: "/sandbox/bbb222", status: 404, asked: true},
		{name: "create is never forwarded", method: "POST", path: "/sandbox/create", body: `{}`, status: 500, asked: false},
		{name: "a forwarded request is not forwarded again", method: "GET", path: "/sandbox/aaa111", headers: map[string]string{httpapi.ForwardedHeader: "x"}, status: 404, asked: false},
		{name: "no token: refused before any lookup", method: "GET", path: "/sandbox/aaa111", noAuth: true, status: 401, asked: false},
		{name: "replica gone", peers: deadPeers, method: "GET", path: "/sandbox/aaa111", status: 502, asked: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.peers
			if p == nil {
				p = peers
			}
			p.mu.Lock()
			p.asked = nil
			p.mu.Unlock()
			mu.Lock()
			got = nil
			mu.Unlock()
			front := httptest.NewServer(s.api.Forward(s.api.Handler(), p, "replica-b"))
			defer front.Close()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, front.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.noAuth {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			p.mu.Lock()
			asked := len(p.asked) > 0
			p.mu.Unlock()
			if asked != tc.asked {
				t.Errorf("peers asked: %v, want %v", asked, tc.asked)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.forwarded == "" {
				if len(got) != 0 {
					t.Errorf("the other replica got %+v, want nothing", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("the other replica got %d requests, want 1", len(got))
			}
			g := got[0]
			if g.method+" "+g.path != tc.forwarded || g.body != tc.body || g.auth != "Bearer "+token || g.forwardedBy != "replica-b" {
				t.Errorf("forwarded %+v, want %q with the body, the token and %s: replica-b", g, tc.forwarded, httpapi.ForwardedHeader)
			}
			if string(body) != `{"from":"other"}` {
				t.Errorf("answer %s, want the other replica's", body)
			}
		})
	}
	if len(deadPeers.unreachable) != 1 || deadPeers.unreachable[0] != "aaa111" {
		t.Errorf("unreachable reported %v, want [aaa111]", deadPeers.unreachable)
	}
}

func TestForwardOtherOwner(t *testing.T) {
	s := newServer(t, refusingCreator, func(c *httpapi.Config) {
		c.Tokens = []httpapi.Credential{{Name: "alice", Token: "alice-token-9c2e"}}
	})
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("another owner's request reached the holding replica: %s %s", r.Method, r.URL)
	}))
	t.Cleanup(other.Close)
	peers := &peersAt{url: other.URL, owner: httpapi.RESTOwner, ids: map[string]bool{"aaa111": true}}
	front := httptest.NewServer(s.api.Forward(s.api.Handler(), peers, "replica-b"))
	t.Cleanup(front.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", front.URL+"/sandbox/aaa111", nil)
	req.Header.Set("Authorization", "Bearer alice-token-9c2e")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("another owner got %d, want 404 as for a missing sandbox", resp.StatusCode)
	}
}
