package session

import (
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestLanguageResultNotes: the note of execute_code's result says what happened, whichever
// step of multi_code_executor it happened in.
func TestLanguageResultNotes(t *testing.T) {
	exit := 0
	tests := []struct {
		name string
		in   tools.Result
		want string
	}{
		{"cancelled before the code ran", tools.Result{Status: tools.StatusCancelled, Error: "cancelled: context canceled"}, "cancelled"},
		{"cancelled while it ran", tools.Result{Status: tools.StatusCancelled, ExitCode: &exit}, "cancelled"},
		{"nothing ran", tools.Result{Status: tools.StatusError, Error: "language c needs gcc"}, "did not run"},
		{"the build failed", tools.Result{Status: tools.StatusError, ExitCode: &exit, Metadata: map[string]any{"phase": "compile"}}, "build failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := languageResult(tc.in, []string{"multi_code_executor", "c"}, 30, time.Millisecond)
			if !strings.Contains(res.Note, tc.want) {
				t.Errorf("note %q, want it to say %q", res.Note, tc.want)
			}
		})
	}
}
