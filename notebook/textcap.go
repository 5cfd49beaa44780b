package notebook

import "strings"

// Output text is capped by its JSON-encoded size with package textcap; what is left here is
// the notebook's own clean-up of that text.

// stripANSI removes terminal escape sequences (colours, cursor moves) that IPython puts in
// tracebacks: CSI sequences (ESC [ ... final byte) and OSC sequences (ESC ] ... BEL or ST).
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] != 0x1b {
			b.WriteByte(s[i])
			i++
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '[': // CSI: parameters and intermediates, then one final byte in @..~
			i++
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
			i++
		case ']': // OSC: up to BEL or ESC backslash
			i++
			for i < len(s) && s[i] != 0x07 && !(s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\') {
				i++
			}
			if i < len(s) && s[i] == 0x1b {
				i++
			}
			i++
		default: // a two-byte escape
			i++
		}
	}
	return b.String()
}
