package notebook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// msg builds a message the way readMessage does: content goes through JSON and the decoder.
func msg(channel, msgType string, content any) *message {
	raw, err := json.Marshal(content)
	if err != nil {
		panic(err)
	}
	tree, err := newDecoder(bytes.NewReader(raw), limits{text: 1 << 20}, nil).value("")
	if err != nil {
		panic(err)
	}
	return &message{Header: header{MsgType: msgType}, Channel: channel, Content: tree.(map[string]any)}
}

func stream(name, text string) *message {
	return msg(channelIOPub, "stream", map[string]any{"name": name, "text": text})
}

func display(kind string, data map[string]any, displayID string) *message {
	return msg(channelIOPub, kind, map[string]any{"data": data, "metadata": map[string]any{}, "transient": map[string]any{"display_id": displayID}})
}

func TestCollector(t *testing.T) {
	t.Parallel()
	png1 := base64.StdEncoding.EncodeToString([]byte("\x89PNG-one"))
	png2 := base64.StdEncoding.EncodeToString([]byte("\x89PNG-two"))
	tests := []struct {
		name  string
		msgs  []*message
		check func(t *testing.T, r Result)
	}{
		{"stdout then the value, on its own line", []*message{
			stream("stdout", "3"),
			display("execute_result", map[string]any{"text/plain": "42"}, ""),
		}, func(t *testing.T, r Result) {
			if r.Output != "3\n42" || r.Value != "42" {
				t.Errorf("output %q value %q", r.Output, r.Value)
			}
		}},
		{"stderr kept apart", []*message{stream("stdout", "out\n"), stream("stderr", "warn\n"), stream("stdout", "more\n")}, func(t *testing.T, r Result) {
			if r.Output != "out\nmore\n" || r.Stderr != "warn\n" {
				t.Errorf("output %q stderr %q", r.Output, r.Stderr)
			}
		}},
		{"a plot is an image, not its text", []*message{
			display("display_data", map[string]any{"image/png": png1 + "\n", "text/plain": "<Figure size 640x480 with 1 Axes>"}, ""),
		}, func(t *testing.T, r Result) {
			if len(r.Images) != 1 || string(r.Images[0].Data) != "\x89PNG-one" || r.Output != "" {
				t.Errorf("images %v output %q", r.Images, r.Output)
			}
		}},
		{"markdown is preferred, html kept aside", []*message{
			display("display_data", map[string]any{"text/markdown": "**b**", "text/plain": "<IPython.core.display.Markdown object>"}, ""),
			display("display_data", map[string]any{"text/html": "<table/>", "text/plain": "df"}, ""),
			stream("stdout", "after\n"),
		}, func(t *testing.T, r Result) {
			if r.Output != "**b**\ndf\nafter\n" || len(r.HTML) != 1 || r.HTML[0] != "<table/>" {
				t.Errorf("output %q html %q", r.Output, r.HTML)
			}
		}},
		{"svg is text", []*message{display("display_data", map[string]any{"image/svg+xml": "<svg/>", "text/plain": "fig"}, "")}, func(t *testing.T, r Result) {
			if r.Output != "<svg/>" || len(r.Images) != 0 {
				t.Errorf("output %q images %d", r.Output, len(r.Images))
			}
		}},
		{"update_display_data replaces the image", []*message{
			display("display_data", map[string]any{"image/png": png1}, "d1"),
			display("update_display_data", map[string]any{"image/png": png2}, "d1"),
		}, func(t *testing.T, r Result) {
			if len(r.Images) != 1 || string(r.Images[0].Data) != "\x89PNG-two" {
				t.Errorf("images %v", r.Images)
			}
		}},
		{"clear_output(wait=True) clears at the next output", []*message{
			stream("stdout", "old\n"),
			msg(channelIOPub, "clear_output", map[string]any{"wait": true}),
			stream("stdout", "new\n"),
		}, func(t *testing.T, r Result) {
			if r.Output != "new\n" {
				t.Errorf("output %q", r.Output)
			}
		}},
		{"error traceback without colour", []*message{
			msg(channelIOPub, "error", map[string]any{"ename": "ZeroDivisionError", "evalue": "division by zero",
				"traceback": []string{"\x1b[0;31m---------\x1b[0m", "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"}}),
			msg(channelShell, "execute_reply", map[string]any{"status": "error", "execution_count": 3, "ename": "ZeroDivisionError"}),
		}, func(t *testing.T, r Result) {
			if r.Error == nil || r.Error.Text() != "---------\nZeroDivisionError: division by zero" {
				t.Errorf("error %+v", r.Error)
			}
		}},
		{"an error only in the reply still counts", []*message{
			msg(channelShell, "execute_reply", map[string]any{"status": "error", "ename": "NameError", "evalue": "name 'q' is not defined", "traceback": []string{}}),
		}, func(t *testing.T, r Result) {
			if r.Error == nil || r.Error.Text() != "NameError: name 'q' is not defined" {
				t.Errorf("error %+v", r.Error)
			}
		}},
		{"an image cut while read is refused with the fix", []*message{
			func() *message {
				m := display("display_data", map[string]any{"image/png": png1[:4] + textcap.Marker(30<<20) + png1[4:]}, "")
				m.truncated = map[string]int64{"image/png": 30 << 20}
				return m
			}(),
		}, func(t *testing.T, r Result) {
			if len(r.Images) != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "lower dpi") {
				t.Errorf("images %d notes %q", len(r.Images), r.Notes)
			}
		}},
		{"text cut while read counts as omitted", []*message{
			func() *message {
				m := stream("stdout", "head"+textcap.Marker(5000)+"tail")
				m.truncated = map[string]int64{"text": 5000}
				return m
			}(),
		}, func(t *testing.T, r Result) {
			if r.Output != "head"+textcap.Marker(5000)+"tail" || !r.Truncated || r.OmittedBytes != 5000 {
				t.Errorf("output %q truncated %v omitted %d", r.Output, r.Truncated, r.OmittedBytes)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCollector(1 << 20)
			for _, m := range tc.msgs {
				c.handle(m)
			}
			tc.check(t, c.result())
		})
	}
}

func TestCollectorSignals(t *testing.T) {
	t.Parallel()
	c := newCollector(100)
	if r, idle := c.handle(msg(channelIOPub, "status", map[string]any{"execution_state": "busy"})); r != nil || idle {
		t.Error("busy is not idle")
	}
	if _, idle := c.handle(msg(channelIOPub, "status", map[string]any{"execution_state": "idle"})); !idle {
		t.Error("idle not seen")
	}
	r, _ := c.handle(msg(channelShell, "execute_reply", map[string]any{"status": "ok", "execution_count": 7}))
	if r == nil || r.Status != "ok" || r.ExecutionCount != 7 {
		t.Errorf("reply %+v", r)
	}
}

func TestImageLimits(t *testing.T) {
	t.Parallel()
	c := newCollector(100)
	one := base64.StdEncoding.EncodeToString([]byte("img"))
	for range maxImages + 3 {
		c.handle(display("display_data", map[string]any{"image/png": one}, ""))
	}
	c.handle(display("display_data", map[string]any{"image/png": "not base64!"}, ""))
	r := c.result()
	if len(r.Images) != maxImages || len(r.Notes) != 4 {
		t.Errorf("%d images, notes %q", len(r.Images), r.Notes)
	}
}

func TestProgressIsCapped(t *testing.T) {
	t.Parallel()
	var sent int
	var last string
	p := newProgress(func(o sandbox.Output) {
		sent += len(o.Stdout) + len(o.Stderr)
		last = o.Stdout
	})
	chunk := strings.Repeat("y", 200<<10)
	for range 50 { // 10 MB of output, flushed as it comes
		p.add("stdout", chunk)
		p.add("stderr", "e")
		p.flush()
	}
	if sent > progressBudget+1024 {
		t.Errorf("progress sent %d bytes, budget %d", sent, progressBudget)
	}
	if !strings.Contains(last, "progress output stops here") {
		t.Errorf("the last notification must say progress stopped: %q", last)
	}
	if newProgress(nil) != nil {
		t.Error("no sender, no progress")
	}
}
