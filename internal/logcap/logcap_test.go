package logcap

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		limit int
		want  string
	}{
		{"short text is kept", "hello", 10, "hello"},
		{"long text is cut and says so", "abcdefgh", 3, "abc... (5 more bytes)"},
		{"cut lands on a rune boundary", "aé", 2, "a... (2 more bytes)"},
		{"invalid bytes become U+FFFD", "a\xffb", 10, "a\uFFFDb"},
		{"zero limit", "abc", 0, "... (3 more bytes)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Prefix(tc.in, tc.limit)
			if got != tc.want {
				t.Fatalf("Prefix(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("Prefix returned invalid UTF-8 %q", got)
			}
			if got := Prefix([]byte(tc.in), tc.limit); got != tc.want {
				t.Fatalf("Prefix([]byte) = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLimiterBurstThenRate(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(3, time.Second)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.Allow(); !ok {
			t.Fatalf("event %d of the burst held back", i)
		}
	}
	for range 5 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("event past the burst let through")
		}
	}
	now = now.Add(time.Second)
	ok, suppressed := l.Allow()
	if !ok || suppressed != 5 {
		t.Fatalf("after one interval: ok=%v suppressed=%d, want true and 5", ok, suppressed)
	}
	if ok, _ := l.Allow(); ok {
		t.Fatal("a second event within the interval let through")
	}
}

func TestLoggerBoundsTextAndLines(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), Options{MaxText: 8, Burst: 2, Every: time.Hour})
	huge := bytes.Repeat([]byte("x"), 1<<20)
	logged := 0
	for range 1000 {
		if l.Log(slog.LevelWarn, "stderr", "line", huge) {
			logged++
		}
	}
	if logged != 2 {
		t.Fatalf("%d lines logged, want the burst of 2", logged)
	}
	if buf.Len() > 1024 {
		t.Fatalf("log holds %d bytes for 1000 lines of 1 MiB; want a bounded prefix of two", buf.Len())
	}
	if !strings.Contains(buf.String(), "xxxxxxxx... (1048568 more bytes)") {
		t.Fatalf("log lacks the cut text: %s", buf.String())
	}
}
