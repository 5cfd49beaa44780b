package textcap

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
		if got := EncodedLen([]byte(tc.in)); got != tc.want {
			t.Errorf("EncodedLen(%q) = %d, want %d", tc.in, got, tc.want)
		}
		// Never less than what encoding/json produces (HTML escaping on, the worst case).
		encoded, _ := json.Marshal(validText([]byte(tc.in)))
		if len(encoded)-2 > tc.want {
			t.Errorf("%q encodes to %d bytes, more than the %d counted", tc.in, len(encoded)-2, tc.want)
		}
	}
}

func TestFitPrefixSuffix(t *testing.T) {
	tests := []struct {
		in             string
		budget         int
		prefix, suffix string
	}{
		{"abcdef", 3, "abc", "def"},
		{"abc", 10, "abc", "abc"},
		{"abc", 0, "", ""},
		{"a\x00b", 6, "a", "b"},
		{"€€", 5, "€", "€"},
		{"a\xe2\x82", 100, "a", "a\xe2\x82"},                 // a rune cut at the end of a head is left out
		{"\x82\xaca\xe2\x82", 100, "\x82\xaca", "a\xe2\x82"}, // the end of a rune cut at the start of a tail is dropped
	}
	for _, tc := range tests {
		if got := FitPrefix([]byte(tc.in), tc.budget); string(got) != tc.prefix {
			t.Errorf("FitPrefix(%q, %d) = %q, want %q", tc.in, tc.budget, got, tc.prefix)
		}
		if got := FitSuffix([]byte(tc.in), tc.budget); string(got) != tc.suffix {
			t.Errorf("FitSuffix(%q, %d) = %q, want %q", tc.in, tc.budget, got, tc.suffix)
		}
	}
}

// capText caps data in one go, as a Capture fed the same bytes in any pieces would.
func capText(data []byte, limit int) (text string, truncated bool, omitted int64) {
	c := New(limit)
	c.Write(data)
	return c.Text()
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
		{name: "one over", in: "0123456789a", limit: 10, want: "01234" + Marker(1) + "6789a", truncated: true, omitted: 1},
		{name: "long", in: strings.Repeat("a", 100) + strings.Repeat("b", 100), limit: 8,
			want: "aaaa" + Marker(192) + "bbbb", truncated: true, omitted: 192},
		{name: "escapes count", in: "\x01\x01\x01", limit: 12, want: "\x01" + Marker(1) + "\x01",
			truncated: true, omitted: 1},
		{name: "runes are not cut", in: "€€€€€€", limit: 10, want: "€" + Marker(12) + "€", truncated: true, omitted: 12},
		{name: "invalid bytes become U+FFFD", in: "a\xffb", limit: 10, want: "a\uFFFDb"},
		{name: "one U+FFFD per invalid byte", in: "a\xff\xfeb\xe2\x82", limit: 100, want: "a\uFFFD\uFFFDb\uFFFD\uFFFD"},
		{name: "zero limit", in: "abc", limit: 0, want: Marker(3), truncated: true, omitted: 3},
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

// checkCapped verifies the promises of a Capture for one input: valid UTF-8, within the
// limit once encoded, the input itself when it fits, else a prefix and a suffix of it
// around the marker; and the same answer however the input is split into writes, of bytes
// or of strings.
func checkCapped(t *testing.T, data []byte, limit int, split int) {
	text, truncated, omitted := capText(data, limit)
	if !utf8.ValidString(text) {
		t.Fatalf("not valid UTF-8: %q", text)
	}
	if !truncated {
		if text != validText(data) || omitted != 0 {
			t.Fatalf("untruncated text %q differs from input %q", text, data)
		}
		if EncodedLen(data) > limit {
			t.Fatalf("%q is over the limit %d but was not truncated", data, limit)
		}
	} else {
		marker := Marker(omitted)
		head, tail, ok := strings.Cut(text, marker)
		if !ok {
			t.Fatalf("no marker in %q", text)
		}
		if EncodedLen([]byte(head))+EncodedLen([]byte(tail)) > limit {
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
	c, s := New(limit), New(limit)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), max(1, split))
		c.Write(rest[:n])
		s.WriteString(string(rest[:n]))
		rest = rest[n:]
	}
	if pieces, _, _ := c.Text(); pieces != text {
		t.Fatalf("written in pieces of %d: %q, at once: %q", split, pieces, text)
	}
	if pieces, _, _ := s.Text(); pieces != text {
		t.Fatalf("written as strings in pieces of %d: %q, at once: %q", split, pieces, text)
	}
	if c.Len() != int64(len(data)) {
		t.Fatalf("Len %d for %d bytes", c.Len(), len(data))
	}
	if limit > 0 && c.EndsWith('\n') != bytes.HasSuffix(data, []byte("\n")) {
		t.Fatalf("EndsWith('\\n') %v for %q", c.EndsWith('\n'), data)
	}
}

// markerSize is the encoded size of the omission marker, which comes on top of the limit.
func markerSize(omitted int64) int { return EncodedLen([]byte(Marker(omitted))) }

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

func TestCaptureWriteString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		pieces      []string
		limit       int
		want        string // exact, when set
		wantTrunc   bool
		wantOmitted int64
	}{
		{"small text is whole", []string{"hello ", "world"}, 100, "hello world", false, 0},
		{"exactly at the limit", []string{"0123456789"}, 10, "0123456789", false, 0},
		{"head and tail kept", []string{"aaaaa", "bbbbbbbbbb", "ccccc"}, 10, "aaaaa" + Marker(10) + "ccccc", true, 10},
		{"control characters cost six", []string{"\x00\x00\x00"}, 12, "", true, 1},
		{"quotes cost two", []string{`""""`}, 8, `""""`, false, 0},
		{"a rune is never split", []string{"ééééé"}, 5, "é" + Marker(6) + "é", true, 6},
		{"many small pieces", strings.Split(strings.Repeat("x", 1000), ""), 100, strings.Repeat("x", 50) + Marker(900) + strings.Repeat("x", 50), true, 900},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := New(tc.limit)
			for _, p := range tc.pieces {
				c.WriteString(p)
			}
			got, trunc, omitted := c.Text()
			if tc.want != "" && got != tc.want {
				t.Errorf("text = %q, want %q", got, tc.want)
			}
			if trunc != tc.wantTrunc || omitted != tc.wantOmitted {
				t.Errorf("truncated %v omitted %d, want %v %d", trunc, omitted, tc.wantTrunc, tc.wantOmitted)
			}
			// What is kept (the marker aside) encodes within the limit.
			kept := strings.Replace(got, Marker(omitted), "", 1)
			enc, _ := json.Marshal(kept)
			if len(enc)-2 > tc.limit+12 { // Go's encoder is a little cheaper than our worst case
				t.Errorf("kept text encodes to %d bytes, over the %d limit", len(enc)-2, tc.limit)
			}
		})
	}
}

func TestCapturePiecesMatchWhole(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("ab\x01é\n", 3000)
	whole := New(1000)
	whole.WriteString(text)
	pieces := New(1000)
	for i := 0; i < len(text); i += 7 {
		pieces.WriteString(text[i:min(i+7, len(text))])
	}
	a, _, _ := whole.Text()
	b, _, _ := pieces.Text()
	if a != b {
		t.Errorf("writing in pieces changed the result:\n%q\n%q", a, b)
	}
}

func TestCaptureSkip(t *testing.T) {
	t.Parallel()
	c := New(20)
	c.WriteString("head-")
	c.Skip(1000)
	c.WriteString("-tail")
	got, trunc, omitted := c.Text()
	if !trunc || omitted != 1000 || got != "head-"+Marker(1000)+"-tail" {
		t.Errorf("got %q %v %d", got, trunc, omitted)
	}
	if !c.EndsWith('l') || c.Len() != 1010 {
		t.Errorf("EndsWith/Len after Skip: %v %d", c.EndsWith('l'), c.Len())
	}
}

func TestCaptureReset(t *testing.T) {
	t.Parallel()
	c := New(10)
	c.WriteString("a long text that passes the limit\n")
	c.Skip(5)
	c.Reset()
	if c.Len() != 0 || c.EndsWith('\n') {
		t.Errorf("after Reset: Len %d, EndsWith('\\n') %v", c.Len(), c.EndsWith('\n'))
	}
	c.WriteString("0123456789") // the head grows again after a Skip is reset
	if got, trunc, omitted := c.Text(); got != "0123456789" || trunc || omitted != 0 {
		t.Errorf("after Reset: %q %v %d", got, trunc, omitted)
	}
}

func BenchmarkCapture(b *testing.B) {
	chunk := bytes.Repeat([]byte("output line of a build log\n"), 64<<10/27)
	b.SetBytes(int64(len(chunk)))
	c := New(1 << 20)
	for b.Loop() {
		c.Write(chunk)
	}
	c.Text()
}
