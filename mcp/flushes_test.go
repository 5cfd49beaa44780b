package mcp_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/mcp"
)

// sseMessages is the JSON data of each event of an SSE body, in order.
func sseMessages(body []byte) ([]map[string]any, error) {
	var msgs []map[string]any
	for _, data := range sseData(body) {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("event data %q: %w", data, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// TestListenAcknowledgesFirst: a stateless client's subscriptions/listen stream starts with
// notifications/subscriptions/acknowledged and ends with the result, every time, also when
// nothing it asked for can be established (this server announces no list changes), so the
// stream completes at once. mcp-go's transport could drop the acknowledgement then: its
// notification forwarder took it off the session's channel while the response path, which
// finds the channel empty, wrote the result and ended the request (the conformance suite's
// server-stateless failed on it about once in six runs). Many listens at once give the race
// its chances; each must be acknowledged.
func TestListenAcknowledgesFirst(t *testing.T) {
	t.Parallel()
	url := newLocalToolsServer(t)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			c := &rpcClient{url: url, http: freshHTTP()}
			for range each {
				errs <- listenOnce(c)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 3 {
				t.Error(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d listen streams were not acknowledged first", failed, workers*each)
	}
}

// listenOnce opens a listen stream asking for tool list changes, and checks its frames:
// the acknowledgement (tagged with the stream's subscription id, establishing nothing),
// then the result.
func listenOnce(c *rpcClient) error {
	status, contentType, body, err := c.send("subscriptions/listen",
		map[string]any{"notifications": map[string]any{"toolsListChanged": true}})
	if err != nil {
		return err
	}
	if status != 200 || !strings.HasPrefix(contentType, "text/event-stream") {
		return fmt.Errorf("listen: HTTP %d %s %q; want 200 and an event stream", status, contentType, body)
	}
	msgs, err := sseMessages(body)
	if err != nil {
		return err
	}
	if len(msgs) != 2 || msgs[0]["method"] != "notifications/subscriptions/acknowledged" || msgs[1]["result"] == nil {
		return fmt.Errorf("listen stream %q; want the acknowledgement, then the result", body)
	}
	params, _ := msgs[0]["params"].(map[string]any)
	if established, _ := params["notifications"].(map[string]any); len(established) != 0 {
		return fmt.Errorf("acknowledged %v; want nothing established (no list changes are announced)", established)
	}
	return nil
}

// TestIntegrationHTTPProgressBeforeResult: a stateless client that asks for progress gets
// the call's output as progress notifications before the result, every time, also when the
// whole output is one notification sent just before the result (a call shorter than the
// stream interval). mcp-go's transport dropped that notification in 24 of 30 such calls:
// its forwarder took it off the queue while the result's path ended the request.
func TestIntegrationHTTPProgressBeforeResult(t *testing.T) {
	t.Parallel()
	f := newStatelessFixture(t, time.Minute)
	c := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP()}
	handle := c.openHandle(t)
	for i := range 20 {
		_, _, body, err := c.send("tools/call", map[string]any{"name": "shell_executor",
			"arguments": map[string]any{"command": "echo a; echo b", mcp.HandleArg: handle},
			"_meta":     map[string]any{"progressToken": i}})
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := sseMessages(body)
		if err != nil {
			t.Fatal(err)
		}
		var progress []string
		for _, m := range msgs[:max(len(msgs)-1, 0)] {
			if p, _ := m["params"].(map[string]any); m["method"] == "notifications/progress" && p["progressToken"] == float64(i) {
				progress = append(progress, fmt.Sprint(p["message"]))
			}
		}
		if len(msgs) == 0 || msgs[len(msgs)-1]["result"] == nil || strings.Join(progress, "\n") != "a\nb" {
			t.Fatalf("call %d: stream %q; want progress notifications saying a, b, then the result", i, body)
		}
	}
}
