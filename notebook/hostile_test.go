package notebook

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// These tests are issue 9's finding 3: everything the notebook client reads comes from
// inside the sandbox, where the model's code runs jupyter_server and the kernel. A fake
// Jupyter server in this process plays the hostile side; each attack is streamed from small
// reused buffers, so the heap this process grows is the client's.

// hostileJupyter is a fake jupyter_server with one kernel, "k1". A cell's code names what
// its kernel sends back: "ok" prints ok, and every other code is an attack in attacks.
type hostileJupyter struct {
	srv        *httptest.Server
	interrupts atomic.Int64 // interrupt requests received
	attacks    map[string]attack
}

// attack sends a cell's hostile output. It returns errStop when the connection can no
// longer carry the cell's reply (it broke the framing on purpose, or the client hung up),
// and errInterrupted when the client interrupted the cell (the reply says KeyboardInterrupt).
type attack func(h *hostileJupyter, ws *websocket.Conn, parent string) error

var (
	errStop        = errors.New("attack over: no reply")
	errInterrupted = errors.New("interrupted")
)

func newHostileJupyter(t *testing.T, attacks map[string]attack) *hostileJupyter {
	t.Helper()
	h := &hostileJupyter{attacks: attacks}
	upgrader := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	mux := http.NewServeMux()
	model := `{"id": "k1", "name": "python3", "execution_state": "idle"}`
	mux.HandleFunc("POST /api/kernels", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, model)
	})
	mux.HandleFunc("GET /api/kernels/k1", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, model) })
	mux.HandleFunc("POST /api/kernels/k1/interrupt", func(w http.ResponseWriter, r *http.Request) {
		h.interrupts.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/kernels/k1/channels", func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		h.serve(ws)
	})
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// serve answers kernel_info and execute requests until the client goes.
func (h *hostileJupyter) serve(ws *websocket.Conn) {
	for {
		var req struct {
			Header  header         `json:"header"`
			Content executeRequest `json:"content"`
		}
		if err := ws.ReadJSON(&req); err != nil {
			return
		}
		parent := req.Header.MsgID
		_ = h.send(ws, channelIOPub, "status", parent, map[string]any{"execution_state": "busy"})
		switch req.Header.MsgType {
		case "kernel_info_request":
			_ = h.send(ws, channelShell, "kernel_info_reply", parent, map[string]any{"status": "ok"})
		case "execute_request":
			reply := map[string]any{"status": "ok", "execution_count": 1}
			if req.Content.Code == "ok" {
				_ = h.send(ws, channelIOPub, "stream", parent, map[string]any{"name": "stdout", "text": "ok\n"})
			} else if err := h.attacks[req.Content.Code](h, ws, parent); errors.Is(err, errStop) {
				return
			} else if err != nil {
				reply = map[string]any{"status": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": []string{}}
			}
			_ = h.send(ws, channelShell, "execute_reply", parent, reply)
		}
		_ = h.send(ws, channelIOPub, "status", parent, map[string]any{"execution_state": "idle"})
	}
}

func (h *hostileJupyter) send(ws *websocket.Conn, channel, msgType, parent string, content any) error {
	return ws.WriteJSON(map[string]any{
		"header":        map[string]any{"msg_id": newMsgID(), "msg_type": msgType},
		"parent_header": map[string]any{"msg_id": parent},
		"channel":       channel, "content": content,
	})
}

// envelope is the start of a message answering parent, up to its content's opening brace.
func envelope(channel, msgType, parent string) string {
	return fmt.Sprintf(`{"header": {"msg_id": %q, "msg_type": %q}, "parent_header": {"msg_id": %q}, "channel": %q, "content": {`,
		newMsgID(), msgType, parent, channel)
}

// streamed writes one message: head, then body repeated n times, then tail, without ever
// holding more than body in memory. A write that fails because the client hung up is
// errStop.
func streamed(ws *websocket.Conn, head string, body []byte, n int, tail string) error {
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return errStop
	}
	if _, err := io.WriteString(w, head); err != nil {
		return errStop
	}
	for range n {
		if _, err := w.Write(body); err != nil {
			return errStop
		}
	}
	if _, err := io.WriteString(w, tail); err != nil {
		return errStop
	}
	if err := w.Close(); err != nil {
		return errStop
	}
	return nil
}

// heapWatch samples the heap while an attack runs: its peak above the level before, and
// the bytes allocated meanwhile.
type heapWatch struct {
	base, allocs0, peak uint64
	stop, done          chan struct{}
}

var heapSamples = []string{"/memory/classes/heap/objects:bytes", "/gc/heap/allocs:bytes"}

func readHeap() (inUse, allocated uint64) {
	s := []metrics.Sample{{Name: heapSamples[0]}, {Name: heapSamples[1]}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func watchHeap() *heapWatch {
	runtime.GC()
	w := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	w.base, w.allocs0 = readHeap()
	w.peak = w.base
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			inUse, _ := readHeap()
			w.peak = max(w.peak, inUse)
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// end returns the peak heap growth and the bytes allocated since watchHeap.
func (w *heapWatch) end() (peak, allocated uint64) {
	close(w.stop)
	<-w.done
	_, allocs := readHeap()
	return w.peak - w.base, allocs - w.allocs0
}

// TestHostileKernelMessages (finding 3): a kernel message costs the client a bounded amount
// of memory whatever it holds or claims. Structural abuse (bytes, values, nesting) fails the
// cell with a clear error, naming the limit, and the kernel is interrupted; oversized
// strings and images are cut or left out with a note; endless output stays within the
// cell's caps. After each attack the next cell runs normally on a new connection.
func TestHostileKernelMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("streams hundreds of MiB through the decoder")
	}
	const mib = 1 << 20
	zeros := []byte(strings.Repeat("0,", 32<<10))                     // 64 KiB: 32768 values
	strs := []byte(strings.Repeat(`"a",`, 16<<10))                    // 64 KiB: 16384 strings
	opens := []byte(strings.Repeat("[", 64<<10))                      // 64 KiB of nesting
	xs := []byte(strings.Repeat("x", 64<<10))                         // 64 KiB of text or base64
	line := []byte(strings.Repeat("y", 1023) + "\\n")                 // 1 KiB of output, escaped newline
	bigText := []byte(`"` + strings.Repeat("z", mib) + `", `)         // one 1 MiB string
	sevenMiB := []byte(`"` + strings.Repeat("QUFB", 7*mib/4) + `", `) // 7 MiB of valid base64

	tests := []struct {
		name string
		// send is what the kernel answers the cell with.
		send attack
		// tooLarge is the error the cell must fail with; empty means it must succeed.
		tooLarge string
		check    func(t *testing.T, r Result)
		// maxPeak bounds the heap's growth while the cell runs.
		maxPeak uint64
	}{
		{
			name: "a frame header claiming 1 GiB is refused before its payload",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				hdr := []byte{0x81, 127, 0, 0, 0, 0, 0, 0, 0, 0}
				binary.BigEndian.PutUint64(hdr[2:], 1<<30)
				_, _ = ws.NetConn().Write(append(hdr, xs...))
				return errStop
			},
			tooLarge: "over 64 MiB", maxPeak: 16 * mib,
		},
		{
			name: "a 1 GiB message streamed in frames is cut at 64 MiB",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "stream", parent)+`"name": "stdout", "text": "`, xs, 1<<30/len(xs), `"}}`)
			},
			tooLarge: "over 64 MiB", maxPeak: 32 * mib,
		},
		{
			name: "millions of small values",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "stream", parent)+`"name": "stdout", "text": "", "pad": [`, zeros, 128, `0]}}`) // 4M values
			},
			tooLarge: "with more than 65536 JSON values", maxPeak: 16 * mib,
		},
		{
			name: "millions of short strings",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "stream", parent)+`"name": "stdout", "text": "", "pad": [`, strs, 128, `""]}}`) // 2M strings
			},
			tooLarge: "with more than 65536 JSON values", maxPeak: 16 * mib,
		},
		{
			name: "deep nesting",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "stream", parent)+`"pad": `, opens, 16, "") // 1M levels
			},
			tooLarge: "nested deeper than 64 levels", maxPeak: 16 * mib,
		},
		{
			name: "a 48 MiB base64 image is left out before it is decoded",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "display_data", parent)+`"data": {"text/plain": "<Figure>", "image/png": "`, xs, 48*mib/len(xs), `"}}}`)
			},
			check: func(t *testing.T, r Result) {
				if len(r.Images) != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "over the 6 MB limit") {
					t.Errorf("want the image left out with a note, got %d images, notes %q", len(r.Images), r.Notes)
				}
			},
			maxPeak: 48 * mib,
		},
		{
			name: "an array of 7 MiB images under one key keeps one",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "display_data", parent)+`"data": {"image/png": [`, sevenMiB, 8, `""]}}}`)
			},
			maxPeak: 48 * mib,
		},
		{
			name: "forty 1 MiB strings in one message are cut to the text budget",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				return streamed(ws, envelope(channelIOPub, "stream", parent)+`"name": "stdout", "text": "kept\n", "pad": [`, bigText, 40, `""]}}`)
			},
			check: func(t *testing.T, r Result) {
				if r.Output != "kept\n" {
					t.Errorf("output %q, want the text that came before the padding", r.Output)
				}
			},
			maxPeak: 48 * mib,
		},
		{
			name: "endless 1 MiB output messages until the timeout",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				head := envelope(channelIOPub, "stream", parent) + `"name": "stdout", "text": "`
				return untilInterruptedBy(h, 1<<14, func() error { return streamed(ws, head, line, 1024, `"}}`) })
			},
			check: func(t *testing.T, r Result) {
				if !r.TimedOut || !r.Truncated || r.OmittedBytes < 10*mib || len(r.Output) > DefaultMaxOutputBytes+100 {
					t.Errorf("want a timed-out cell with its output capped, got timed out %v, %d bytes, omitted %d", r.TimedOut, len(r.Output), r.OmittedBytes)
				}
			},
			maxPeak: 64 * mib,
		},
		{
			name: "endless tiny output messages until the timeout",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				msg := []byte(envelope(channelIOPub, "stream", parent) + `"name": "stderr", "text": "e\n"}}`)
				return untilInterruptedBy(h, 1<<22, func() error { return streamed(ws, "", msg, 1, "") })
			},
			check: func(t *testing.T, r Result) {
				if !r.TimedOut || len(r.Stderr) > DefaultMaxOutputBytes+100 || !strings.HasPrefix(r.Stderr, "e\ne\n") {
					t.Errorf("want a timed-out cell with stderr capped, got timed out %v, %d bytes", r.TimedOut, len(r.Stderr))
				}
			},
			maxPeak: 32 * mib,
		},
		{
			name: "endless undecodable images earn a bounded list of notes",
			send: func(h *hostileJupyter, ws *websocket.Conn, parent string) error {
				msg := []byte(envelope(channelIOPub, "display_data", parent) + `"data": {"image/png": "not base64!"}}}`)
				return untilInterruptedBy(h, 1<<22, func() error { return streamed(ws, "", msg, 1, "") })
			},
			check: func(t *testing.T, r Result) {
				// On a loaded machine the stream may outlast the interrupt's grace, and the
				// kernel's restart then adds its own note after the image notes.
				notes := slices.DeleteFunc(slices.Clone(r.Notes), func(n string) bool { return strings.Contains(n, "so the kernel was restarted") })
				if len(notes) != maxNotes+1 || !strings.Contains(notes[maxNotes], "more notes like these") {
					t.Errorf("want %d notes and a count of the rest, got %q", maxNotes, r.Notes)
				}
			},
			maxPeak: 32 * mib,
		},
	}

	h := newHostileJupyter(t, map[string]attack{})
	for _, tc := range tests {
		h.attacks[tc.name] = tc.send
	}
	c := NewClient(strings.TrimPrefix(h.srv.URL, "http://"), "token", (&net.Dialer{}).DialContext)
	t.Cleanup(c.Close)
	k, err := StartKernel(t.Context(), c, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			interrupts := h.interrupts.Load()
			watch := watchHeap()
			start := time.Now()
			r, err := k.Execute(t.Context(), tc.name, ExecOptions{Timeout: 3 * time.Second})
			took := time.Since(start)
			peak, allocated := watch.end()
			t.Logf("peak heap growth %.1f MiB, allocated %.1f MiB, in %s", float64(peak)/mib, float64(allocated)/mib, took.Round(time.Millisecond))
			if peak > tc.maxPeak {
				t.Errorf("the heap grew by %.1f MiB, want at most %d MiB", float64(peak)/mib, tc.maxPeak/mib)
			}
			if tc.tooLarge != "" {
				want := "the kernel sent a message " + tc.tooLarge + "; output of this cell was cut"
				if !errors.Is(err, ErrMessageTooLarge) || !errors.Is(err, ErrConnectionLost) || !strings.Contains(err.Error(), want) {
					t.Fatalf("want the cell failed with %q (ErrMessageTooLarge, ErrConnectionLost), got %v", want, err)
				}
				if h.interrupts.Load() == interrupts {
					t.Error("the kernel was not interrupted after a message over its budget")
				}
			} else if err != nil {
				t.Fatalf("the cell failed: %v", err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			next, err := k.Execute(t.Context(), "ok", ExecOptions{Timeout: 10 * time.Second})
			if err != nil || next.Output != "ok\n" {
				t.Fatalf("the cell after the attack: %q, %v", next.Output, err)
			}
		})
	}
}

// untilInterruptedBy runs one until h sees an interrupt, at most limit times; it returns
// errInterrupted when interrupted.
func untilInterruptedBy(h *hostileJupyter, limit int, one func() error) error {
	start := h.interrupts.Load()
	for range limit {
		if h.interrupts.Load() > start {
			return errInterrupted
		}
		if err := one(); err != nil {
			return err
		}
	}
	return nil
}

// TestHostileJupyterREST (finding 3): the REST answers and the websocket handshake are
// bounded too: endless bodies and headers, a huge error text and a huge kernel id end in a
// clear error, with the heap barely grown.
func TestHostileJupyterREST(t *testing.T) {
	const mib = 1 << 20
	endless := func(w http.ResponseWriter, prefix string) {
		_, _ = io.WriteString(w, prefix)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for i := 0; i < 1<<14; i++ { // up to 1 GiB, until the client hangs up
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	endlessHeader := func(w http.ResponseWriter) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nX-Pad: ")
		chunk := strings.Repeat("x", 64<<10)
		for i := 0; i < 1<<14; i++ {
			if _, err := buf.WriteString(chunk); err != nil || buf.Flush() != nil {
				return
			}
		}
	}
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		call    func(ctx context.Context, c *Client) error
		want    string
	}{
		{"an endless body", func(w http.ResponseWriter, r *http.Request) { endless(w, `{"id": "`) },
			func(ctx context.Context, c *Client) error { _, err := c.GetKernel(ctx, "k1"); return err },
			"the answer is over 1 MiB"},
		{"an endless error body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			endless(w, `{"message": "`)
		}, func(ctx context.Context, c *Client) error { return c.InterruptKernel(ctx, "k1") },
			"the answer is over 1 MiB"},
		{"a long error message is cut", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"message": "boom\x1b[31m" + strings.Repeat("m", 512<<10)})
		}, func(ctx context.Context, c *Client) error { return c.InterruptKernel(ctx, "k1") },
			"500 Internal Server Error: boom [31mmmm"},
		{"endless headers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pad", strings.Repeat("x", 1<<20))
			w.WriteHeader(http.StatusOK)
		}, func(ctx context.Context, c *Client) error { return c.Ping(ctx) },
			"server response headers exceeded"},
		{"a kernel id of 64 KiB", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]string{"id": strings.Repeat("k", 64<<10)})
		}, func(ctx context.Context, c *Client) error { _, err := c.CreateKernel(ctx, ""); return err },
			"a kernel id or name over 256 bytes"},
		{"an endless websocket handshake", func(w http.ResponseWriter, r *http.Request) { endlessHeader(w) },
			func(ctx context.Context, c *Client) error {
				ch, err := c.connect(ctx, "k1", nil)
				if err == nil {
					ch.close()
				}
				return err
			},
			"websocket handshake answer over 256 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(tc.handler))
			t.Cleanup(srv.Close)
			c := NewClient(strings.TrimPrefix(srv.URL, "http://"), "token", (&net.Dialer{}).DialContext)
			t.Cleanup(c.Close)
			watch := watchHeap()
			err := tc.call(t.Context(), c)
			peak, allocated := watch.end()
			t.Logf("peak heap growth %.1f MiB, allocated %.1f MiB", float64(peak)/mib, float64(allocated)/mib)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("the error is %d bytes long; the server's words must be cut", len(err.Error()))
			}
			if peak > 16*mib {
				t.Errorf("the heap grew by %.1f MiB, want at most 16 MiB", float64(peak)/mib)
			}
		})
	}
}
