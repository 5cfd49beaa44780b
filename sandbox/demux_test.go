package sandbox

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/docker/docker/pkg/stdcopy"
)

// attachFrame is one frame of the engine's attach stream, built by hand.
func attachFrame(stream byte, payload string) []byte {
	h := make([]byte, 8, 8+len(payload))
	h[0] = stream
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	return append(h, payload...)
}

func TestDemux(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // past one 32 KiB copy
	// The engine's own writer, as a cross-check of the format.
	var engine bytes.Buffer
	_, _ = stdcopy.NewStdWriter(&engine, stdcopy.Stdout).Write([]byte("from the engine's writer\n"))
	_, _ = stdcopy.NewStdWriter(&engine, stdcopy.Stderr).Write([]byte("warn\n"))

	tests := []struct {
		name           string
		stream         []byte
		stdout, stderr string
		wantErr        string // "" for a clean end
	}{
		{"empty", nil, "", "", ""},
		{"engine writer", engine.Bytes(), "from the engine's writer\n", "warn\n", ""},
		{"interleaved", bytes.Join([][]byte{attachFrame(1, "a"), attachFrame(2, "b"), attachFrame(1, "c"), attachFrame(0, "d")}, nil), "acd", "b", ""},
		{"large frame", attachFrame(1, big), big, "", ""},
		{"empty frame", attachFrame(1, ""), "", "", ""},
		{"engine error", bytes.Join([][]byte{attachFrame(1, "ok"), attachFrame(3, "no such container")}, nil), "ok", "", `engine reported an error on the attach stream: "no such container"`},
		{"unknown stream", attachFrame(7, "x"), "", "", "unknown stream 7"},
		{"cut header", attachFrame(1, "abc")[:5], "", "", "unexpected EOF"},
		{"cut payload", attachFrame(1, "abcdef")[:11], "abc", "", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := demux(&stdout, &stderr, bytes.NewReader(tt.stream))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("demux: %v, want a clean end", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("demux: %v, want an error containing %q", err, tt.wantErr)
			}
			if stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("stdout %q (%d bytes), stderr %q; want %q (%d bytes), %q",
					trim(stdout.String()), stdout.Len(), stderr.String(), trim(tt.stdout), len(tt.stdout), tt.stderr)
			}
		})
	}
}

func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
