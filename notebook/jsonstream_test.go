package notebook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

// TestCappedDecoderMatchesEncodingJSON: below its limits the decoder reads what encoding/json
// reads.
func TestCappedDecoderMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	inputs := []string{
		`{"a": 1, "b": [true, false, null], "c": {"d": "e"}}`,
		`{"esc": "quote \" backslash \\ slash \/ \b\f\n\r\t"}`,
		`{"u": "\u00e9\u4e16\ud83d\ude00", "raw": "é世😀"}`,
		`{"lone": "\ud800x", "lone2": "\udc00"}`,
		"{\"invalid\": \"a\xff\xfeb\xe2\x82\"}", // one U+FFFD per invalid byte
		`{"n": [-1, 0.5, 1e10, -2.5E-3, 12345678901234567890]}`,
		`  [ ] `,
		`{"empty": {}, "e2": [], "s": ""}`,
		`"just a string"`,
	}
	for _, in := range inputs {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			d := newDecoder(strings.NewReader(in), limits{text: 1 << 20}, nil)
			got, err := d.value("")
			if err != nil {
				t.Fatalf("capped decoder: %v", err)
			}
			var want any
			dec := json.NewDecoder(strings.NewReader(in))
			dec.UseNumber()
			if err := dec.Decode(&want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v\nwant %#v", got, want)
			}
		})
	}
}

func TestCappedDecoderErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`{"a" 1}`, `{"a": tru}`, `[1 2]`, `{"a": "\x"}`, `{1: 2}`, `{"a": "unterminated`} {
		d := newDecoder(strings.NewReader(in), limits{text: 100}, nil)
		if _, err := d.value(""); err == nil {
			t.Errorf("%.40q: want an error", in)
		} else if !errors.Is(err, errSyntax) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%.40q: unexpected error %v", in, err)
		}
	}
}

// TestReadMessageLarge: a 5 MB stream message is read with its text cut to the limit, its
// other fields intact, and the cut counted.
func TestReadMessageLarge(t *testing.T) {
	t.Parallel()
	text := "HEAD" + strings.Repeat("x\n", 5<<20/2) + "TAIL"
	raw, err := json.Marshal(map[string]any{
		"header":        map[string]any{"msg_id": "m1", "msg_type": "stream"},
		"parent_header": map[string]any{"msg_id": "p1", "msg_type": "execute_request"},
		"metadata":      map[string]any{},
		"content":       map[string]any{"name": "stdout", "text": text},
		"channel":       "iopub",
	})
	if err != nil {
		t.Fatal(err)
	}
	limit := 1000
	m, err := readMessage(bytes.NewReader(raw), limits{text: limit}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.MsgType != "stream" || m.ParentHeader.MsgID != "p1" || m.Channel != "iopub" {
		t.Errorf("envelope: %+v", m)
	}
	s := streamOf(m.Content)
	omitted := m.truncated["text"]
	head, tail, ok := strings.Cut(s.Text, textcap.Marker(omitted))
	if !ok || !strings.HasPrefix(head, "HEAD") || !strings.HasSuffix(tail, "TAIL") || len(head)+len(tail) > limit {
		t.Fatalf("text of %d bytes: want HEAD, the marker, TAIL within %d bytes", len(s.Text), limit)
	}
	if omitted != int64(len(text)-len(head)-len(tail)) {
		t.Errorf("omitted %d, want %d", omitted, len(text)-len(head)-len(tail))
	}

	small, err := readMessage(strings.NewReader(`{"header":{"msg_type":"status"},"parent_header":{},"content":{"execution_state":"idle"},"channel":"iopub"}`), limits{text: 10}, nil)
	if err != nil || small.truncated != nil || small.Header.MsgType != "status" {
		t.Errorf("small message: %+v, %v", small, err)
	}
	if _, err := readMessage(strings.NewReader(`{"header": `), limits{text: 10}, nil); !errors.Is(err, errBadMessage) {
		t.Errorf("a malformed message: %v, want errBadMessage", err)
	}
	cut := io.MultiReader(bytes.NewReader(raw[:2<<20]), iotest.ErrReader(io.ErrClosedPipe))
	if _, err := readMessage(cut, limits{text: limit}, nil); errors.Is(err, errBadMessage) || !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("a connection broken mid-message: %v, want the read error", err)
	}
}

// BenchmarkReadMessage reads a 1 MiB stream message of 1 KiB lines, as a flooding kernel
// sends them: the decoder's speed bounds how fast output can arrive before the tunnel's
// buffer fills.
func BenchmarkReadMessage(b *testing.B) {
	raw, err := json.Marshal(map[string]any{
		"header":        map[string]any{"msg_id": "m1", "msg_type": "stream"},
		"parent_header": map[string]any{"msg_id": "p1"},
		"channel":       "iopub",
		"content":       map[string]any{"name": "stdout", "text": strings.Repeat(strings.Repeat("y", 1023)+"\n", 1024)},
	})
	if err != nil {
		b.Fatal(err)
	}
	buf := newReadBuffer(nil)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := readMessage(bytes.NewReader(raw), limits{text: 1 << 20}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHeadTail: a string written in pieces of any size keeps its first and last halves
// within the limit, cut on rune boundaries, with the marker counting what was dropped.
func TestHeadTail(t *testing.T) {
	t.Parallel()
	ascii := strings.Repeat("0123456789", 10)
	wide := strings.Repeat("é世", 20) // runes of 2 and 3 bytes
	tests := []struct {
		name, in   string
		limit      int
		head, tail string
	}{
		{"fits", ascii[:10], 10, ascii[:10], ""},
		{"cut", ascii, 10, "01234", "56789"},
		{"odd limit", ascii, 7, "012", "6789"},
		{"no room", ascii, 0, "", ""},
		{"runes cut at both ends are dropped whole", wide, 12, "é世", "é世"},
	}
	for _, tc := range tests {
		for _, piece := range []int{1, 3, 7, 1000} {
			t.Run(fmt.Sprintf("%s/pieces of %d", tc.name, piece), func(t *testing.T) {
				k := newHeadTail(tc.limit)
				for rest := tc.in; len(rest) > 0; {
					n := min(piece, len(rest))
					_, _ = k.WriteString(rest[:n])
					rest = rest[n:]
				}
				got, omitted := k.text()
				want := tc.head
				if len(tc.in) > tc.limit {
					wantOmitted := int64(len(tc.in) - len(tc.head) - len(tc.tail))
					want = tc.head + textcap.Marker(wantOmitted) + tc.tail
					if omitted != wantOmitted {
						t.Errorf("omitted %d, want %d", omitted, wantOmitted)
					}
				}
				if got != want {
					t.Errorf("got %q, want %q", got, want)
				}
			})
		}
	}
}
