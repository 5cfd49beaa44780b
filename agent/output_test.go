package agent

import (
	"bytes"
	"strings"
	"testing"
)

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

// BenchmarkStream20MB is the agent's whole path for a large output: 20 MB written in pipe-
// sized reads to a streaming stream, a chunk taken every 16 reads, and the capped result.
func BenchmarkStream20MB(b *testing.B) {
	read := bytes.Repeat([]byte("output line of a build log\n"), 64<<10/27)
	reads := 20_000_000 / len(read)
	b.SetBytes(int64(reads * len(read)))
	for b.Loop() {
		s := newStream(1<<20, true)
		for i := range reads {
			s.Write(read)
			if i%16 == 15 {
				s.takeChunk(false)
			}
		}
		s.takeChunk(true)
		s.result()
	}
}
