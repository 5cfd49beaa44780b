package notebook

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTextCap(t *testing.T) {
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
		{"head and tail kept", []string{"aaaaa", "bbbbbbbbbb", "ccccc"}, 10, "aaaaa" + omissionMarker(10) + "ccccc", true, 10},
		{"control characters cost six", []string{"\x00\x00\x00"}, 12, "", true, 1},
		{"quotes cost two", []string{`""""`}, 8, `""""`, false, 0},
		{"a rune is never split", []string{"ééééé"}, 5, "é" + omissionMarker(6) + "é", true, 6},
		{"many small pieces", strings.Split(strings.Repeat("x", 1000), ""), 100, strings.Repeat("x", 50) + omissionMarker(900) + strings.Repeat("x", 50), true, 900},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTextCap(tc.limit)
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
			kept := strings.Replace(got, omissionMarker(omitted), "", 1)
			enc, _ := json.Marshal(kept)
			if len(enc)-2 > tc.limit+12 { // Go's encoder is a little cheaper than our worst case
				t.Errorf("kept text encodes to %d bytes, over the %d limit", len(enc)-2, tc.limit)
			}
		})
	}
}

func TestTextCapPiecesMatchWhole(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("ab\x01é\n", 3000)
	whole := newTextCap(1000)
	whole.WriteString(text)
	pieces := newTextCap(1000)
	for i := 0; i < len(text); i += 7 {
		pieces.WriteString(text[i:min(i+7, len(text))])
	}
	a, _, _ := whole.Text()
	b, _, _ := pieces.Text()
	if a != b {
		t.Errorf("writing in pieces changed the result:\n%q\n%q", a, b)
	}
}

func TestTextCapSkip(t *testing.T) {
	t.Parallel()
	c := newTextCap(20)
	c.WriteString("head-")
	c.skip(1000)
	c.WriteString("-tail")
	got, trunc, omitted := c.Text()
	if !trunc || omitted != 1000 || got != "head-"+omissionMarker(1000)+"-tail" {
		t.Errorf("got %q %v %d", got, trunc, omitted)
	}
	if !c.endsWith('l') || c.Len() != 1010 {
		t.Errorf("endsWith/Len after skip: %v %d", c.endsWith('l'), c.Len())
	}
}

func TestStripANSI(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"\x1b[0;31mZeroDivisionError\x1b[0m: division by zero", "ZeroDivisionError: division by zero"},
		{"\x1b[1;32m----> 1\x1b[39m 1/0", "----> 1 1/0"},
		{"\x1b]8;;file:///x\x07link\x1b]8;;\x07", "link"},
		{"\x1b]0;title\x1b\\text", "text"},
		{"cut at the end \x1b[", "cut at the end "},
		{"lone escape\x1b", "lone escape"},
	}
	for _, tc := range tests {
		if got := stripANSI(tc.in); got != tc.want {
			t.Errorf("stripANSI(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
