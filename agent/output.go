package agent

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// A command's output travels inside a JSON string, so its caps are measured the way it will
// be sent: by encoded size. A megabyte of NUL bytes is six megabytes on the wire, and a cap
// on raw bytes would let it through.

// asciiCost is the encoded size of each ASCII byte inside a JSON string. It is deliberately
// the worst case over common encoders: Go's escapes <, > and & unless told not to, and
// others escape DEL.
var asciiCost = func() (cost [utf8.RuneSelf]uint8) {
	for c := range cost {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			cost[c] = 2
		case c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&':
			cost[c] = 6 // \u00XX
		default:
			cost[c] = 1
		}
	}
	return cost
}()

// nextRune decodes the first rune of b (len(b) > 0) and returns its length in b and its
// encoded size. An invalid byte is a rune of length 1 that will be sent as \ufffd.
func nextRune(b []byte) (size, cost int) {
	if c := b[0]; c < utf8.RuneSelf {
		return 1, int(asciiCost[c])
	}
	r, size := utf8.DecodeRune(b)
	switch {
	case r == utf8.RuneError && size == 1:
		return 1, 6
	case r == '\u2028' || r == '\u2029':
		return size, 6 // encoding/json escapes these for JavaScript's sake
	default:
		return size, size
	}
}

// encodedLen is the size of b once JSON-encoded as (part of) a string, quotes excluded.
func encodedLen(b []byte) int {
	total := 0
	for i := 0; i < len(b); {
		size, cost := nextRune(b[i:])
		i += size
		total += cost
	}
	return total
}

// fitPrefix returns the longest prefix of b that encodes within budget and ends on a rune
// boundary.
func fitPrefix(b []byte, budget int) []byte {
	n, used := 0, 0
	for n < len(b) && utf8.FullRune(b[n:]) {
		size, cost := nextRune(b[n:])
		if used+cost > budget {
			break
		}
		n += size
		used += cost
	}
	return b[:n]
}

// fitSuffix returns the longest suffix of b that encodes within budget and starts on a rune
// boundary. b is a window cut out of a longer stream, so its first bytes may be the end of a
// rune that started before it; those are dropped.
func fitSuffix(b []byte, budget int) []byte {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	used := encodedLen(b)
	for used > budget {
		size, cost := nextRune(b)
		b = b[size:]
		used -= cost
	}
	return b
}

// validText turns b into valid UTF-8, one U+FFFD per invalid byte, so that the text says
// how much was lost and encodes no larger than encodedLen promised.
func validText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// omissionMarker stands in for the middle of an output that passed its cap.
func omissionMarker(omitted int64) string {
	return fmt.Sprintf("\n[... %d bytes omitted ...]\n", omitted)
}

// capture keeps what of one output stream can be reported under an encoded-size limit: the
// head (its first half) and the tail (the other half, the latest bytes), dropping the middle.
//
// Writes do no per-byte work, so a process can pour out output as fast as the pipe carries
// it: they only copy raw bytes into the head and a ring buffer for the tail, and the encoded
// sizes are worked out once, by text. That needs no more than limit raw bytes kept, because
// every byte encodes to at least one: the last tailLimit raw bytes always hold the whole
// tail, and a stream of more than limit raw bytes is over its limit whatever it contains.
type capture struct {
	limit     int // encoded-size cap of the whole text
	headLimit int // encoded-size budget of the head; the tail gets the rest
	head      []byte
	tail      []byte // ring buffer of the latest bytes after the head, up to tailLimit
	tailLimit int
	oldest    int   // once the ring is full, the index of its oldest byte
	total     int64 // every byte ever written
}

func newCapture(limit int) *capture {
	headLimit := limit / 2
	return &capture{limit: limit, headLimit: headLimit, tailLimit: limit - headLimit}
}

// Write records p. It never fails; the signature lets a capture stand in for an io.Writer.
func (c *capture) Write(p []byte) (int, error) {
	written := len(p)
	c.total += int64(len(p))
	if room := c.headLimit - len(c.head); room > 0 {
		n := min(room, len(p))
		c.head = append(c.head, p[:n]...)
		p = p[n:]
	}
	c.writeTail(p)
	return written, nil
}

func (c *capture) writeTail(p []byte) {
	if len(p) == 0 || c.tailLimit == 0 {
		return
	}
	if len(p) >= c.tailLimit {
		c.tail = append(c.tail[:0], p[len(p)-c.tailLimit:]...)
		c.oldest = 0
		return
	}
	if room := c.tailLimit - len(c.tail); room > 0 {
		n := min(room, len(p))
		c.tail = append(c.tail, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 {
		n := copy(c.tail[c.oldest:], p)
		p = p[n:]
		c.oldest = (c.oldest + n) % c.tailLimit
	}
}

// tailBytes returns the ring's content oldest first.
func (c *capture) tailBytes() []byte {
	if c.oldest == 0 {
		return c.tail
	}
	ordered := make([]byte, 0, len(c.tail))
	ordered = append(ordered, c.tail[c.oldest:]...)
	return append(ordered, c.tail[:c.oldest]...)
}

// text returns the captured output as valid UTF-8: all of it if it encodes within the
// limit, else head + omission marker + tail, with the count of raw bytes left out.
func (c *capture) text() (text string, truncated bool, omitted int64) {
	headFrom, tailFrom := c.head, c.tailBytes()
	if c.total == int64(len(headFrom)+len(tailFrom)) {
		all := make([]byte, 0, len(headFrom)+len(tailFrom))
		all = append(append(all, headFrom...), tailFrom...)
		if encodedLen(all) <= c.limit {
			return validText(all), false, 0
		}
		// Nothing was dropped yet, so the tail may begin inside the head buffer.
		headFrom = all
		tailFrom = all[len(fitPrefix(all, c.headLimit)):]
	}
	head := fitPrefix(headFrom, c.headLimit)
	tail := fitSuffix(tailFrom, c.limit-c.headLimit)
	omitted = c.total - int64(len(head)) - int64(len(tail))
	return validText(head) + omissionMarker(omitted) + validText(tail), true, omitted
}

// reset empties the capture for reuse, keeping its buffers.
func (c *capture) reset() {
	c.head, c.tail, c.oldest, c.total = c.head[:0], c.tail[:0], 0, 0
}

// capText caps data in one go, as a capture fed the same bytes in any pieces would.
func capText(data []byte, limit int) (text string, truncated bool, omitted int64) {
	c := newCapture(limit)
	c.Write(data)
	return c.text()
}

// streamChunkLimit caps each streamed chunk of one stream, by encoded size. Chunks are a
// progress view; the final result carries the authoritative (capped) output.
const streamChunkLimit = 64 << 10

// stream collects one of a process's output streams: everything, for the result, and what
// is new since the last streamed chunk.
type stream struct {
	mu    sync.Mutex
	all   *capture
	chunk *capture // nil unless the request streams
	// carry holds an incomplete rune at the end of the last read, kept out of chunk until
	// the rest of it arrives so that a chunk boundary does not split a character.
	carry []byte
}

func newStream(limit int, streaming bool) *stream {
	s := &stream{all: newCapture(limit)}
	if streaming {
		s.chunk = newCapture(streamChunkLimit)
	}
	return s
}

func (s *stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all.Write(p)
	if s.chunk != nil {
		s.writeChunk(p)
	}
	return len(p), nil
}

func (s *stream) writeChunk(p []byte) {
	// First complete the rune held back from the previous write, if p continues it.
	for len(s.carry) > 0 && len(p) > 0 && !utf8.FullRune(s.carry) && !utf8.RuneStart(p[0]) {
		s.carry = append(s.carry, p[0])
		p = p[1:]
	}
	if len(p) == 0 && !utf8.FullRune(s.carry) {
		return // still incomplete (or nothing held)
	}
	s.chunk.Write(s.carry)
	whole := len(p) - incompleteSuffix(p)
	s.chunk.Write(p[:whole])
	s.carry = append(s.carry[:0], p[whole:]...)
}

// takeChunk returns the output since the previous call and starts a new chunk. With final
// set it also gives up a held-back partial rune, since no more output is coming.
func (s *stream) takeChunk(final bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chunk == nil {
		return ""
	}
	if final {
		s.chunk.Write(s.carry)
		s.carry = s.carry[:0]
	}
	if s.chunk.total == 0 {
		return ""
	}
	text, _, _ := s.chunk.text()
	s.chunk.reset()
	return text
}

func (s *stream) result() (text string, truncated bool, omitted int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.text()
}

// incompleteSuffix is the length of a rune at the end of p that has started but not
// finished; 0 if p ends on a rune boundary (or in bytes that can never become valid).
func incompleteSuffix(p []byte) int {
	for n := 1; n < utf8.UTFMax && n <= len(p); n++ {
		if utf8.RuneStart(p[len(p)-n]) {
			if utf8.FullRune(p[len(p)-n:]) {
				return 0
			}
			return n
		}
	}
	return 0
}
