// Package logcap logs text that an untrusted party chose (a sandbox's stderr, an error a
// sandbox sent) without letting that party flood the log or the server's memory: each text
// is cut to a bounded prefix, and lines pass a rate limit that says how many it held back.
package logcap

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Prefix returns at most limit bytes of text as valid UTF-8, cut on a rune boundary; a text
// that was longer ends with a note of how many bytes were left out.
func Prefix[T string | []byte](text T, limit int) string {
	cut := len(text)
	if cut > limit {
		cut = max(limit, 0)
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
	}
	s := strings.ToValidUTF8(string(text[:cut]), "\uFFFD")
	if cut < len(text) {
		s += fmt.Sprintf("... (%d more bytes)", len(text)-cut)
	}
	return s
}

// Limiter is a token bucket: it lets a burst of events through, then one per interval.
// It is safe for concurrent use.
type Limiter struct {
	burst int
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// NewLimiter returns a Limiter that allows burst events at once and refills one every
// interval.
func NewLimiter(burst int, every time.Duration) *Limiter {
	return &Limiter{burst: max(burst, 1), every: every, now: time.Now, tokens: float64(max(burst, 1))}
}

// Allow reports whether one more event may pass now. When it may, suppressed is the number
// of events held back since the last one that passed.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() && l.every > 0 {
		l.tokens = min(float64(l.burst), l.tokens+float64(now.Sub(l.last))/float64(l.every))
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// Options bounds a Logger. Zero fields take the defaults.
type Options struct {
	// MaxText is the most bytes of one text that reach the log; default 512.
	MaxText int
	// Burst lines pass at once, then one every Every; defaults 20 and 1 s.
	Burst int
	Every time.Duration
}

// Logger logs untrusted texts through a *slog.Logger, bounded and rate-limited.
type Logger struct {
	log     *slog.Logger
	limit   *Limiter
	maxText int
}

// New returns a Logger writing to log.
func New(log *slog.Logger, opts Options) *Logger {
	if opts.MaxText <= 0 {
		opts.MaxText = 512
	}
	if opts.Burst <= 0 {
		opts.Burst = 20
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	return &Logger{log: log, limit: NewLimiter(opts.Burst, opts.Every), maxText: opts.MaxText}
}

// Log logs msg at level with text (cut to its prefix) under key, plus attrs, unless the rate
// limit holds it back. It reports whether the line was logged.
func (l *Logger) Log(level slog.Level, msg, key string, text []byte, attrs ...any) bool {
	ok, suppressed := l.limit.Allow()
	if !ok {
		return false
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return true
	}
	attrs = append(attrs, key, Prefix(text, l.maxText))
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_before", suppressed)
	}
	l.log.Log(ctx, level, msg, attrs...)
	return true
}
