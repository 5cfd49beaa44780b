package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodedLen(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 3},
		{`"\`, 4},
		{"\n\r\t\b\f", 10},
		{"\x00\x01\x1f\x7f", 24},
		{"<>&", 18},
		{"é€𝄞", 2 + 3 + 4},
		{"\u2028\u2029", 12},
		{"\xff", 6},
		{"\xe2\x82", 12}, // a truncated rune is two invalid bytes
	}
	for _, tc := range tests {
		if got := encodedLen([]byte(tc.in)); got != tc.want {
			t.Errorf("encodedLen(%q) = %d, want %d", tc.in, got, tc.want)
		}
		// Never less than what encoding/json produces (HTML escaping on, the worst case).
		encoded, _ := json.Marshal(validText([]byte(tc.in)))
		if len(encoded)-2 > tc.want {
			t.Errorf("%q encodes to %d bytes, more than the %d counted", tc.in, len(encoded)-2, tc.want)
		}
	}
}

func TestCapText(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		limit     int
		want      string
		truncated bool
		omitted   int64
	}{
		{name: "fits", in: "hello", limit: 10, want: "hello"},
		{name: "fits exactly", in: "0123456789", limit: 10, want: "0123456789"},
		{name: "one over", in: "0123456789a", limit: 10, want: "01234" + omissionMarker(1) + "6789a", truncated: true, omitted: 1},
		{name: "long", in: strings.Repeat("a", 100) + strings.Repeat("b", 100), limit: 8,
			want: "aaaa" + omissionMarker(192) + "bbbb", truncated: true, omitted: 192},
		{name: "escapes count", in: "\x01\x01\x01", limit: 12, want: "\x01" + omissionMarker(1) + "\x01",
			truncated: true, omitted: 1},
		{name: "runes are not cut", in: "€€€€€€", limit: 10, want: "€" + omissionMarker(12) + "€", truncated: true, omitted: 12},
		{name: "invalid bytes become U+FFFD", in: "a\xffb", limit: 10, want: "a\uFFFDb"},
		{name: "zero limit", in: "abc", limit: 0, want: omissionMarker(3), truncated: true, omitted: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated, omitted := capText([]byte(tc.in), tc.limit)
			if got != tc.want || truncated != tc.truncated || omitted != tc.omitted {
				t.Errorf("capText = %q %v %d, want %q %v %d", got, truncated, omitted, tc.want, tc.truncated, tc.omitted)
			}
		})
	}
}

// checkCapped verifies the promises of capText for one input: valid UTF-8, within the limit
// once encoded, the input itself when it fits, else a prefix and a suffix of it around the
// marker; and the same answer however the input is split into writes.
func checkCapped(t *testing.T, data []byte, limit int, split int) {
	text, truncated, omitted := capText(data, limit)
	if !utf8.ValidString(text) {
		t.Fatalf("not valid UTF-8: %q", text)
	}
	if !truncated {
		if text != validText(data) || omitted != 0 {
			t.Fatalf("untruncated text %q differs from input %q", text, data)
		}
		if encodedLen(data) > limit {
			t.Fatalf("%q is over the limit %d but was not truncated", data, limit)
		}
	} else {
		marker := omissionMarker(omitted)
		head, tail, ok := strings.Cut(text, marker)
		if !ok {
			t.Fatalf("no marker in %q", text)
		}
		if encodedLen([]byte(head))+encodedLen([]byte(tail)) > limit {
			t.Fatalf("head %q and tail %q are over the limit %d", head, tail, limit)
		}
		// Both ends are cut on rune boundaries of the input, so sanitizing commutes with
		// cutting.
		if whole := validText(data); !strings.HasPrefix(whole, head) || !strings.HasSuffix(whole, tail) {
			t.Fatalf("head %q or tail %q is not from %q", head, tail, data)
		}
		if omitted <= 0 || omitted > int64(len(data)) {
			t.Fatalf("omitted %d of %d bytes", omitted, len(data))
		}
	}
	encoded, _ := json.Marshal(text)
	if max := limit + 2 + markerSize(omitted); truncated && len(encoded) > max {
		t.Fatalf("encoded %d bytes, over %d", len(encoded), max)
	}

	// Written in pieces, the same bytes give the same text.
	c := newCapture(limit)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), max(1, split))
		c.Write(rest[:n])
		rest = rest[n:]
	}
	if pieces, _, _ := c.text(); pieces != text {
		t.Fatalf("written in pieces of %d: %q, at once: %q", split, pieces, text)
	}
}

// markerSize is the encoded size of the omission marker, which comes on top of the limit.
func markerSize(omitted int64) int { return encodedLen([]byte(omissionMarker(omitted))) }

func FuzzCapText(f *testing.F) {
	f.Add([]byte("hello world"), 5, 3)
	f.Add([]byte("€𝄞é\x00\x01\"\\<>&\u2028"), 9, 1)
	f.Add([]byte("\xff\xfe\xe2\x82\xac\xe2\x82"), 7, 2)
	f.Add(bytes.Repeat([]byte("ab\n"), 500), 64, 7)
	f.Fuzz(func(t *testing.T, data []byte, limit int, split int) {
		if limit < 0 || limit > 1<<16 {
			return
		}
		checkCapped(t, data, limit, split)
	})
}

func TestCapTextRandomised(t *testing.T) {
	alphabet := []string{"a", "b", "\n", "\x00", "\"", "é", "€", "𝄞", "\xff", "\xe2", "\x82", "<", "\u2028"}
	seed := uint32(1)
	next := func(n int) int {
		seed = seed*1664525 + 1013904223
		return int(seed>>8) % n
	}
	for range 2000 {
		var b strings.Builder
		for range next(200) {
			b.WriteString(alphabet[next(len(alphabet))])
		}
		checkCapped(t, []byte(b.String()), next(120), 1+next(40))
	}
}

func TestStreamChunksKeepRunesWhole(t *testing.T) {
	s := newStream(1<<20, true)
	euro := []byte("€")
	s.Write([]byte("a"))
	s.Write(euro[:1])
	if got := s.takeChunk(false); got != "a" {
		t.Errorf("first chunk %q, want the partial rune held back", got)
	}
	s.Write(euro[1:])
	s.Write([]byte("b"))
	if got := s.takeChunk(false); got != "€b" {
		t.Errorf("second chunk %q", got)
	}
	s.Write([]byte{0xe2})
	if got := s.takeChunk(true); got != "\uFFFD" {
		t.Errorf("final chunk %q, want the dangling byte given up", got)
	}
	if got, _, _ := s.result(); got != "a€b\uFFFD" {
		t.Errorf("result %q", got)
	}

	// A four-byte rune arriving one byte per read comes out whole.
	var chunks []string
	for _, b := range []byte("𝄞x") {
		s.Write([]byte{b})
		chunks = append(chunks, s.takeChunk(false))
	}
	if strings.Join(chunks, "|") != "|||𝄞|x" {
		t.Errorf("chunks %q", chunks)
	}
}

func BenchmarkCapture(b *testing.B) {
	chunk := bytes.Repeat([]byte("output line of a build log\n"), 64<<10/27)
	b.SetBytes(int64(len(chunk)))
	c := newCapture(1 << 20)
	for b.Loop() {
		c.Write(chunk)
	}
	c.text()
}
