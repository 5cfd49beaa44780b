package notebook

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

// Every kernel message comes from inside the sandbox, where jupyter_server and the kernel
// run the model's code: it is hostile input. A message is also legitimately large at times:
// ipykernel sends a cell's buffered stdout as one stream message, so
// `print("x" * 20_000_000)` is a 20 MB message.
//
// So every message, small or large, is read as it arrives by decoder, under a budget that
// bounds what one message costs the server whatever it is or claims to be:
//
//   - bytes: the websocket refuses a message over maxMessageBytes as soon as a frame header
//     claims it (channels.go), and the decoder counts them again;
//   - structure: at most maxValues values (object keys included), nested at most maxDepth
//     deep;
//   - strings: each text keeps only its head and tail within the cell's output cap, and all
//     the text of one message keeps at most textBudget of it; image data is kept whole or
//     not at all, at most maxImagePayload of it per message.
//
// A message past a structural limit is refused with an error wrapping ErrMessageTooLarge;
// string bytes past a cap are dropped while they are read and counted in
// message.truncated. What is kept is built once, as the decoded tree, and never copied
// through encoding/json again.

// The budget of one kernel message.
const (
	// maxMessageBytes is the largest message read, in bytes on the wire.
	maxMessageBytes = 64 << 20
	// maxValues bounds the values of one message, object keys included: each costs a few
	// dozen bytes of tree.
	maxValues = 1 << 16
	// maxDepth bounds nesting; kernel messages nest less than ten deep.
	maxDepth = 64
	// maxImagePayload caps the base64 image data of one message: an image over it is left
	// out whole, before it is decoded.
	maxImagePayload = 8 << 20
	// maxTextLimit caps the head and tail one string keeps, whatever output cap a cell sets.
	maxTextLimit = 16 << 20
	// keyLimit caps an object key; envelopeLimit caps the fields that only name things (ids,
	// types, states).
	keyLimit      = 1 << 10
	envelopeLimit = 256
	// valueCost is what one value of the decoded tree costs at most, roughly: an interface,
	// its box and its share of a map or slice.
	valueCost = 64
)

// textBudget is the text one message keeps in all, for a cell whose output cap is limit:
// a display's text form and its HTML form at the cap each, and room for the envelope.
func textBudget(limit int) int { return 2*limit + 1<<20 }

// limits are the parts of the budget that depend on the cell.
type limits struct {
	// text is the cell's output cap: a longer string keeps its head and tail within it.
	text int
}

// errBadMessage marks a message that arrived whole but could not be understood; the
// connection is still good.
var errBadMessage = errors.New("malformed kernel message")

// errSyntax is invalid JSON; readMessage reports it as errBadMessage.
var errSyntax = errors.New("invalid JSON")

// tooLargeError is a message past the budget; it wraps ErrMessageTooLarge.
type tooLargeError struct{ what string }

func (e *tooLargeError) Error() string {
	return "the kernel sent a message " + e.what + "; output of this cell was cut"
}

func (e *tooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// errOverBytes is the error for a message over maxMessageBytes.
func errOverBytes() error {
	return &tooLargeError{fmt.Sprintf("over %d MiB", maxMessageBytes>>20)}
}

// readMessage decodes one websocket message under the budget. buf, when not nil, is reset
// onto r and used, so that a connection reads every message with one buffer.
func readMessage(r io.Reader, lim limits, buf *bufio.Reader) (*message, error) {
	d := newDecoder(r, lim, buf)
	tree, err := d.value("")
	switch {
	case errors.Is(err, errSyntax):
		return nil, fmt.Errorf("%w: %w", errBadMessage, err)
	case errors.Is(err, ErrMessageTooLarge):
		return nil, err
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: %w", errBadMessage, io.ErrUnexpectedEOF)
	case err != nil:
		return nil, fmt.Errorf("reading kernel message: %w", err)
	}
	m, err := messageFrom(tree)
	if err != nil {
		return nil, err
	}
	m.truncated = d.truncated
	m.cost = d.cost()
	return m, nil
}

// messageFrom picks the fields this client reads out of a decoded message.
func messageFrom(tree any) (*message, error) {
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", errBadMessage)
	}
	f := fields(obj)
	return &message{
		Header:       headerOf(f.object("header")),
		ParentHeader: headerOf(f.object("parent_header")),
		Content:      f.object("content"),
		Channel:      f.str("channel"),
	}, nil
}

// decoder reads one JSON value into maps, slices, strings, json.Numbers, bools and nils,
// within the budget (see the top of this file).
type decoder struct {
	r   *bufio.Reader
	lim limits
	// truncated counts, by key, the bytes dropped from strings that passed their cap.
	truncated map[string]int64
	depth     int
	values    int
	textLeft  int // text this message may still keep
	imageLeft int // image data this message may still keep
}

func newDecoder(r io.Reader, lim limits, buf *bufio.Reader) *decoder {
	lim.text = min(max(lim.text, 0), maxTextLimit)
	limited := &byteLimit{r: r, left: maxMessageBytes}
	if buf == nil {
		buf = newReadBuffer(limited)
	} else {
		buf.Reset(limited)
	}
	return &decoder{
		r:         buf,
		lim:       lim,
		textLeft:  textBudget(lim.text),
		imageLeft: maxImagePayload,
	}
}

// newReadBuffer returns the buffer messages are read through.
func newReadBuffer(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }

// cost is about what the decoded message holds in memory.
func (d *decoder) cost() int {
	return textBudget(d.lim.text) - d.textLeft + maxImagePayload - d.imageLeft + d.values*valueCost
}

// byteLimit fails a read past maxMessageBytes.
type byteLimit struct {
	r    io.Reader
	left int64
}

func (b *byteLimit) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errOverBytes()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (d *decoder) skipSpace() (byte, error) {
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

// count takes one value from the budget.
func (d *decoder) count() error {
	if d.values++; d.values > maxValues {
		return &tooLargeError{fmt.Sprintf("with more than %d JSON values", maxValues)}
	}
	return nil
}

// value reads the next value; key is the object key it sits under (array elements inherit
// their array's key), which picks the cap of a string.
func (d *decoder) value(key string) (any, error) {
	c, err := d.skipSpace()
	if err != nil {
		return nil, err
	}
	if err := d.count(); err != nil {
		return nil, err
	}
	switch {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array(key)
	case c == '"':
		return d.stringUnder(key)
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

func (d *decoder) nest() error {
	if d.depth++; d.depth > maxDepth {
		return &tooLargeError{fmt.Sprintf("nested deeper than %d levels", maxDepth)}
	}
	return nil
}

func (d *decoder) object() (any, error) {
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
		if err := d.count(); err != nil {
			return nil, err
		}
		k, err := d.text("", keyLimit)
		if err != nil {
			return nil, err
		}
		if c, err = d.skipSpace(); err != nil {
			return nil, err
		} else if c != ':' {
			return nil, fmt.Errorf("%w: ':' expected after key %.40q", errSyntax, k)
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

func (d *decoder) array(key string) (any, error) {
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

func (d *decoder) literal(rest string) error {
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

func (d *decoder) number(first byte) (any, error) {
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
		return nil, fmt.Errorf("%w: bad number %.40q", errSyntax, b)
	}
	return json.Number(b), nil
}

// stringUnder reads a string (its opening quote consumed) with the cap of its key.
func (d *decoder) stringUnder(key string) (string, error) {
	switch {
	case isRaster(key):
		return d.image(key)
	case isEnvelope(key):
		return d.text(key, envelopeLimit)
	}
	return d.text(key, d.lim.text)
}

// isEnvelope reports whether strings under key only name things: ids, types, states.
func isEnvelope(key string) bool {
	switch key {
	case "msg_id", "msg_type", "session", "username", "date", "version", "channel", "execution_state", "status", "name", "ename":
		return true
	}
	return false
}

func isRaster(key string) bool {
	for _, mime := range rasterTypes() {
		if key == mime {
			return true
		}
	}
	return false
}

// text reads a string keeping its head and tail within limit bytes and within what is left
// of the message's text budget. The cut is by raw bytes, which costs no pass over the text;
// the collector fits what is kept to the output cap by encoded size.
func (d *decoder) text(key string, limit int) (string, error) {
	keep := newHeadTail(max(min(limit, d.textLeft), 0))
	if err := d.readString(keep); err != nil {
		return "", err
	}
	text, omitted := keep.text()
	if omitted > 0 {
		d.cut(key, omitted)
	}
	d.textLeft -= len(text)
	return text, nil
}

// image reads base64 image data: all of it if it fits what is left of the message's image
// budget, else none (a cut image is useless), counting it as truncated.
func (d *decoder) image(key string) (string, error) {
	keep := &whole{limit: d.imageLeft}
	if err := d.readString(keep); err != nil {
		return "", err
	}
	if keep.dropped {
		d.cut(key, keep.total)
		return "", nil
	}
	d.imageLeft -= keep.b.Cap() // what it holds, spare room included
	return keep.b.String(), nil
}

func (d *decoder) cut(key string, omitted int64) {
	if d.truncated == nil {
		d.truncated = map[string]int64{}
	}
	d.truncated[key] += omitted
}

// sink receives a string's bytes as they are read.
type sink interface {
	io.Writer
	io.StringWriter
}

// headTail keeps the first half and the last half of a string written in pieces, within
// limit bytes in all, dropping the middle. It fills one buffer; once that is full, its
// second half becomes a ring holding the latest bytes.
type headTail struct {
	buf    []byte
	limit  int
	oldest int // once buf is full, the index of the ring's oldest byte (from limit/2 on)
	total  int64
}

func newHeadTail(limit int) *headTail { return &headTail{limit: limit, oldest: limit / 2} }

func (k *headTail) Write(p []byte) (int, error) {
	keepHeadTail(k, p)
	return len(p), nil
}

func (k *headTail) WriteString(s string) (int, error) {
	keepHeadTail(k, s)
	return len(s), nil
}

func keepHeadTail[T string | []byte](k *headTail, p T) {
	k.total += int64(len(p))
	if room := k.limit - len(k.buf); room > 0 {
		n := min(room, len(p))
		if len(k.buf)+n > cap(k.buf) { // grow by doubling, never past the limit
			k.buf = append(make([]byte, 0, min(k.limit, max(2*cap(k.buf), len(k.buf)+n))), k.buf...)
		}
		k.buf = append(k.buf, p[:n]...)
		p = p[n:]
	}
	ring := k.limit - k.limit/2
	if len(p) == 0 || ring == 0 { // all of it fitted, or there is no tail to keep
		return
	}
	if len(p) > ring {
		p = p[len(p)-ring:]
	}
	for len(p) > 0 {
		n := copy(k.buf[k.oldest:], p)
		p = p[n:]
		if k.oldest += n; k.oldest == k.limit {
			k.oldest = k.limit / 2
		}
	}
}

// text is the string as kept: whole when nothing was dropped, else its head, the marker
// textcap.Marker(omitted) and its tail, cut on rune boundaries. Invalid UTF-8 becomes one
// U+FFFD per byte, as encoding/json decodes it.
func (k *headTail) text() (string, int64) {
	if k.total == int64(len(k.buf)) {
		return validUTF8(k.buf), 0
	}
	half := k.limit / 2
	head := k.buf[:half]
	tail := append(append(make([]byte, 0, k.limit-half), k.buf[k.oldest:]...), k.buf[half:k.oldest]...)
	if i := lastRuneStart(head); i >= 0 && !utf8.FullRune(head[i:]) {
		head = head[:i] // a rune whose end was dropped
	}
	for n := 0; n < utf8.UTFMax-1 && len(tail) > 0 && !utf8.RuneStart(tail[0]); n++ {
		tail = tail[1:] // the end of a rune whose start was dropped
	}
	omitted := k.total - int64(len(head)+len(tail))
	return validUTF8(head) + textcap.Marker(omitted) + validUTF8(tail), omitted
}

// lastRuneStart is the index of the last byte of b that can start a rune, looking no
// further back than a rune can be long; -1 if none.
func lastRuneStart(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			return i
		}
	}
	return -1
}

// validUTF8 turns b into a string, replacing each byte of invalid UTF-8 with U+FFFD.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 16)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String()
}

// whole keeps a string only while it is within limit.
type whole struct {
	b       strings.Builder
	limit   int
	total   int64
	dropped bool
}

func (w *whole) Write(p []byte) (int, error) {
	if w.keep(len(p)) {
		w.grow(len(p))
		w.b.Write(p)
	}
	return len(p), nil
}

func (w *whole) WriteString(s string) (int, error) {
	if w.keep(len(s)) {
		w.grow(len(s))
		w.b.WriteString(s)
	}
	return len(s), nil
}

// grow makes room for n more bytes by doubling, never past the limit: append alone grows
// large buffers by a quarter at a time, copying them each time.
func (w *whole) grow(n int) {
	if need := w.b.Len() + n; need > w.b.Cap() {
		w.b.Grow(min(w.limit, max(2*w.b.Cap(), need)) - w.b.Len())
	}
}

// keep counts n more bytes and says whether the string is still within its limit.
func (w *whole) keep(n int) bool {
	w.total += int64(n)
	if !w.dropped && w.total > int64(w.limit) {
		w.dropped = true
		w.b = strings.Builder{} // let its memory go now
	}
	return !w.dropped
}

// readString reads a string whose opening quote has been consumed into dst.
func (d *decoder) readString(dst sink) error {
	var esc [utf8.UTFMax]byte
	for {
		// Copy the run of plain bytes up to the next quote or backslash in one go; dst copies
		// what it keeps, so nothing here allocates per chunk.
		if _, err := d.r.Peek(1); err != nil {
			return err
		}
		buf, _ := d.r.Peek(min(d.r.Buffered(), scanWindow))
		i := specialByte(buf)
		if i < 0 {
			_, _ = dst.Write(buf)
			_, _ = d.r.Discard(len(buf))
			continue
		}
		_, _ = dst.Write(buf[:i])
		_, _ = d.r.Discard(i + 1)
		if buf[i] == '"' {
			return nil
		}
		c, err := d.r.ReadByte()
		if err != nil {
			return err
		}
		switch c {
		case '"', '\\', '/':
			_, _ = dst.WriteString(string(c))
		case 'b':
			_, _ = dst.WriteString("\b")
		case 'f':
			_, _ = dst.WriteString("\f")
		case 'n':
			_, _ = dst.WriteString("\n")
		case 'r':
			_, _ = dst.WriteString("\r")
		case 't':
			_, _ = dst.WriteString("\t")
		case 'u':
			r, err := d.hex4()
			if err != nil {
				return err
			}
			if utf16.IsSurrogate(r) {
				r = d.lowSurrogate(r)
			}
			n := utf8.EncodeRune(esc[:], r)
			_, _ = dst.Write(esc[:n])
		default:
			return fmt.Errorf("%w: bad escape \\%c", errSyntax, c)
		}
	}
}

// scanWindow is how far ahead readString looks for a quote or a backslash at a time: far
// enough to copy plain text in large pieces, near enough that text dense with escapes is
// not scanned again and again to the end of the buffer.
const scanWindow = 4 << 10

// specialByte is the index of the first quote or backslash in buf, or -1: two IndexByte
// scans, which are vectorised, where IndexAny goes byte by byte.
func specialByte(buf []byte) int {
	q := bytes.IndexByte(buf, '"')
	before := buf
	if q >= 0 {
		before = buf[:q]
	}
	if b := bytes.IndexByte(before, '\\'); b >= 0 {
		return b
	}
	return q
}

func (d *decoder) hex4() (rune, error) {
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
func (d *decoder) lowSurrogate(high rune) rune {
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
