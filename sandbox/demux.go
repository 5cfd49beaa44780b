package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// demux splits the engine's multiplexed attach stream into the agent's stdout and stderr.
// Each frame is an 8-byte header (the stream: 0 stdin, 1 stdout, 2 stderr, 3 an error from
// the engine; three zero bytes; the payload's length, big-endian) and the payload. It does
// what the engine's client library's StdCopy does, except that it holds no buffer between
// frames (each is copied through a buffer no larger than itself, at most 32 KiB): an idle
// sandbox's attach stream then costs the server no 32 KiB buffer. It returns nil at the end
// of the stream, and an error for a frame it cannot read or an error the engine sent.
func demux(stdout, stderr io.Writer, r io.Reader) error {
	var header [8]byte
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the attach stream: %w", err)
		}
		size := int64(binary.BigEndian.Uint32(header[4:]))
		var w io.Writer
		switch header[0] {
		case 0, 1: // stdin is echoed on stdout, as StdCopy does
			w = stdout
		case 2:
			w = stderr
		case 3:
			msg, _ := io.ReadAll(io.LimitReader(r, min(size, 1<<10)))
			return fmt.Errorf("the engine reported an error on the attach stream: %q", msg)
		default:
			return fmt.Errorf("reading the attach stream: unknown stream %d in a frame header", header[0])
		}
		if _, err := io.CopyN(w, r, size); err != nil {
			return fmt.Errorf("reading the attach stream: %w", err)
		}
	}
}
