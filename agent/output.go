package agent

import (
	"sync"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

// A command's output travels inside a JSON string, so its caps are measured by encoded size
// (package textcap): each stream keeps its head and tail within the limit.

// streamChunkLimit caps each streamed chunk of one stream, by encoded size. Chunks are a
// progress view; the final result carries the authoritative (capped) output.
const streamChunkLimit = 64 << 10

// stream collects one of a process's output streams: everything, for the result, and what
// is new since the last streamed chunk.
type stream struct {
	mu    sync.Mutex
	all   *textcap.Capture
	chunk *textcap.Capture // nil unless the request streams
	// carry holds an incomplete rune at the end of the last read, kept out of chunk until
	// the rest of it arrives so that a chunk boundary does not split a character.
	carry []byte
}

func newStream(limit int, streaming bool) *stream {
	s := &stream{all: textcap.New(limit)}
	if streaming {
		s.chunk = textcap.New(streamChunkLimit)
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
	if s.chunk.Len() == 0 {
		return ""
	}
	text, _, _ := s.chunk.Text()
	s.chunk.Reset()
	return text
}

func (s *stream) result() (text string, truncated bool, omitted int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.Text()
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
