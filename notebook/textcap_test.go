package notebook

import "testing"

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
