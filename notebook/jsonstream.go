package notebook

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

// A kernel message can be as large as what the code printed: ipykernel sends a cell's
// buffered stdout as one stream message, so `print("x" * 20_000_000)` is a 20 MB websocket
// message. encoding/json would hold it whole, twice. Messages up to smallMessage go to
// encoding/json as they are; larger ones are read by cappedDecoder, which keeps at most a
// limit of each string (its head and tail) while it reads, so memory stays bounded by the
// caps however large the message.

// smallMessage is the largest message decoded whole.
const smallMessage = 1 << 20

// readMessage decodes one websocket message. limitFor gives the cap for a string by the key
// it sits under (array elements inherit their array's key).
func readMessage(r io.Reader, limitFor func(key string) int) (*message, error) {
	var small bytes.Buffer
	n, err := io.CopyN(&small, r, smallMessage+1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading kernel message: %w", err)
	}
	var m message
	if n <= smallMessage {
		if err := json.Unmarshal(small.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadMessage, err)
		}
		return &m, nil
	}
	d := newCappedDecoder(io.MultiReader(&small, r), limitFor)
	tree, err := d.value("")
	if errors.Is(err, errSyntax) {
		return nil, fmt.Errorf("%w: %w", errBadMessage, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading kernel message: %w", err)
	}
	// What is left is bounded by the caps, so the standard library can take it from here.
	raw, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("%w: re-encoding: %w", errBadMessage, err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadMessage, err)
	}
	m.truncated = d.truncated
	return &m, nil
}

// cappedDecoder reads one JSON value into maps, slices, strings, json.Numbers, bools and
// nils, cutting every string to its key's limit as it goes.
type cappedDecoder struct {
	r        *bufio.Reader
	limitFor func(key string) int
	// truncated counts, by key, the bytes dropped from strings that passed their limit.
	truncated map[string]int64
	depth     int
}

// maxDepth bounds nesting, so a hostile message cannot exhaust the stack.
const maxDepth = 200

func newCappedDecoder(r io.Reader, limitFor func(key string) int) *cappedDecoder {
	return &cappedDecoder{r: bufio.NewReaderSize(r, 64<<10), limitFor: limitFor}
}

var errSyntax = errors.New("invalid JSON")

// errBadMessage marks a message that arrived whole but could not be understood; the
// connection is still good.
var errBadMessage = errors.New("malformed kernel message")

func (d *cappedDecoder) skipSpace() (byte, error) {
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
	}
}

func (d *cappedDecoder) value(key string) (any, error) {
	c, err := d.skipSpace()
	if err != nil {
		return nil, err
	}
	switch {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array(key)
	case c == '"':
		return d.str(d.limitFor(key), key)
	case c == 't':
		return true, d.literal("rue")
	case c == 'f':
		return false, d.literal("alse")
	case c == 'n':
		return nil, d.literal("ull")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number(c)
	}
	return nil, fmt.Errorf("%w: unexpected %q", errSyntax, c)
}

func (d *cappedDecoder) nest() error {
	d.depth++
	if d.depth > maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", errSyntax, maxDepth)
	}
	return nil
}

func (d *cappedDecoder) object() (any, error) {
	if err := d.nest(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	obj := map[string]any{}
	c, err := d.skipSpace()
	if err != nil {
		return nil, err
	}
	if c == '}' {
		return obj, nil
	}
	for {
		if c != '"' {
			return nil, fmt.Errorf("%w: object key expected, got %q", errSyntax, c)
		}
		// Keys are short in kernel messages; 4 KiB is plenty and bounds a hostile one.
		k, err := d.str(4<<10, "")
		if err != nil {
			return nil, err
		}
		if c, err = d.skipSpace(); err != nil {
			return nil, err
		} else if c != ':' {
			return nil, fmt.Errorf("%w: ':' expected after key %q", errSyntax, k)
		}
		v, err := d.value(k)
		if err != nil {
			return nil, err
		}
		obj[k] = v
		if c, err = d.skipSpace(); err != nil {
			return nil, err
		}
		switch c {
		case '}':
			return obj, nil
		case ',':
			if c, err = d.skipSpace(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: ',' or '}' expected, got %q", errSyntax, c)
		}
	}
}

func (d *cappedDecoder) array(key string) (any, error) {
	if err := d.nest(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	arr := []any{}
	c, err := d.skipSpace()
	if err != nil {
		return nil, err
	}
	if c == ']' {
		return arr, nil
	}
	if err := d.r.UnreadByte(); err != nil {
		return nil, err
	}
	for {
		v, err := d.value(key)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		if c, err = d.skipSpace(); err != nil {
			return nil, err
		}
		switch c {
		case ']':
			return arr, nil
		case ',':
		default:
			return nil, fmt.Errorf("%w: ',' or ']' expected, got %q", errSyntax, c)
		}
	}
}

func (d *cappedDecoder) literal(rest string) error {
	for i := 0; i < len(rest); i++ {
		c, err := d.r.ReadByte()
		if err != nil {
			return err
		}
		if c != rest[i] {
			return fmt.Errorf("%w: bad literal", errSyntax)
		}
	}
	return nil
}

func (d *cappedDecoder) number(first byte) (any, error) {
	b := []byte{first}
	for {
		c, err := d.r.ReadByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if !(c >= '0' && c <= '9') && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-' {
			if err := d.r.UnreadByte(); err != nil {
				return nil, err
			}
			break
		}
		if len(b) > 64 {
			return nil, fmt.Errorf("%w: number too long", errSyntax)
		}
		b = append(b, c)
	}
	if _, err := strconv.ParseFloat(string(b), 64); err != nil {
		return nil, fmt.Errorf("%w: bad number %q", errSyntax, b)
	}
	return json.Number(b), nil
}

// str reads a string whose opening quote has been consumed, keeping at most limit bytes.
func (d *cappedDecoder) str(limit int, key string) (string, error) {
	keep := textcap.New(limit)
	var esc [utf8.UTFMax]byte
	for {
		// Copy the run of plain bytes up to the next quote or backslash in one go.
		if _, err := d.r.Peek(1); err != nil {
			return "", err
		}
		buf, _ := d.r.Peek(d.r.Buffered())
		i := bytes.IndexAny(buf, "\"\\")
		if i < 0 {
			keep.WriteString(string(buf))
			_, _ = d.r.Discard(len(buf))
			continue
		}
		keep.WriteString(string(buf[:i]))
		_, _ = d.r.Discard(i + 1)
		if buf[i] == '"' {
			break
		}
		c, err := d.r.ReadByte()
		if err != nil {
			return "", err
		}
		switch c {
		case '"', '\\', '/':
			keep.WriteString(string(c))
		case 'b':
			keep.WriteString("\b")
		case 'f':
			keep.WriteString("\f")
		case 'n':
			keep.WriteString("\n")
		case 'r':
			keep.WriteString("\r")
		case 't':
			keep.WriteString("\t")
		case 'u':
			r, err := d.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) {
				r = d.lowSurrogate(r)
			}
			n := utf8.EncodeRune(esc[:], r)
			keep.WriteString(string(esc[:n]))
		default:
			return "", fmt.Errorf("%w: bad escape \\%c", errSyntax, c)
		}
	}
	text, truncated, omitted := keep.Text()
	if truncated {
		if d.truncated == nil {
			d.truncated = map[string]int64{}
		}
		d.truncated[key] += omitted
	}
	return text, nil
}

func (d *cappedDecoder) hex4() (rune, error) {
	var b [4]byte
	if _, err := io.ReadFull(d.r, b[:]); err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(b[:]), 16, 16)
	if err != nil {
		return 0, fmt.Errorf("%w: bad \\u escape", errSyntax)
	}
	return rune(v), nil
}

// lowSurrogate completes a UTF-16 surrogate pair, as encoding/json does: a lone surrogate
// becomes U+FFFD and whatever follows is left for the caller.
func (d *cappedDecoder) lowSurrogate(high rune) rune {
	if next, err := d.r.Peek(6); err == nil && next[0] == '\\' && next[1] == 'u' {
		if v, err := strconv.ParseUint(string(next[2:6]), 16, 16); err == nil {
			if r := utf16.DecodeRune(high, rune(v)); r != utf8.RuneError {
				_, _ = d.r.Discard(6)
				return r
			}
		}
	}
	return utf8.RuneError
}
