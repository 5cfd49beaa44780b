package notebook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// protocolVersion is the Jupyter messaging protocol version this client speaks.
const protocolVersion = "5.3"

// The channels a message travels on.
const (
	channelShell = "shell"
	channelIOPub = "iopub"
)

// header is a message's header, and the shape of its parent_header.
type header struct {
	MsgID    string `json:"msg_id"`
	MsgType  string `json:"msg_type"`
	Session  string `json:"session,omitempty"`
	Username string `json:"username,omitempty"`
	Date     string `json:"date,omitempty"`
	Version  string `json:"version,omitempty"`
}

// message is one kernel message as jupyter_server relays it on the channels websocket (its
// JSON form: no subprotocol, so no binary framing unless the message has buffers), with the
// fields this client reads. It is built by readMessage, within the budget of one message.
type message struct {
	Header       header
	ParentHeader header
	Content      fields
	Channel      string
	// truncated counts the bytes cut from strings too large to keep, by the key they sat
	// under (e.g. "text" or "image/png"); nil when nothing was cut.
	truncated map[string]int64
	// cost is about how much memory the message holds (see decoder.cost).
	cost int
}

// fields is a decoded JSON object; its accessors return the zero value for a missing field
// or one of another type, as encoding/json would leave a field it could not fill.
type fields map[string]any

func (f fields) str(key string) string {
	s, _ := f[key].(string)
	return s
}

func (f fields) flag(key string) bool {
	b, _ := f[key].(bool)
	return b
}

func (f fields) integer(key string) int {
	n, _ := f[key].(json.Number)
	i, err := strconv.Atoi(string(n))
	if err != nil {
		return 0
	}
	return i
}

func (f fields) object(key string) fields {
	o, _ := f[key].(map[string]any)
	return o
}

// strs is an array of strings; elements of other types are left out.
func (f fields) strs(key string) []string {
	arr, _ := f[key].([]any)
	out := make([]string, 0, len(arr))
	for _, v := range arr {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func headerOf(f fields) header {
	return header{
		MsgID:    f.str("msg_id"),
		MsgType:  f.str("msg_type"),
		Session:  f.str("session"),
		Username: f.str("username"),
		Date:     f.str("date"),
		Version:  f.str("version"),
	}
}

// outgoing is a request sent to the kernel.
type outgoing struct {
	Header       header         `json:"header"`
	ParentHeader map[string]any `json:"parent_header"`
	Metadata     map[string]any `json:"metadata"`
	Content      any            `json:"content"`
	Channel      string         `json:"channel"`
	Buffers      []any          `json:"buffers"`
}

func newRequest(session, channel, msgType string, content any) outgoing {
	return outgoing{
		Header: header{
			MsgID:    newMsgID(),
			MsgType:  msgType,
			Session:  session,
			Username: "enclave-mcp",
			Date:     time.Now().UTC().Format(time.RFC3339Nano),
			Version:  protocolVersion,
		},
		ParentHeader: map[string]any{},
		Metadata:     map[string]any{},
		Content:      content,
		Channel:      channel,
		Buffers:      []any{},
	}
}

// newMsgID returns a random id in the UUID-like form Jupyter uses.
func newMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// The contents this client sends and reads.
type (
	executeRequest struct {
		Code            string         `json:"code"`
		Silent          bool           `json:"silent"`
		StoreHistory    bool           `json:"store_history"`
		UserExpressions map[string]any `json:"user_expressions"`
		AllowStdin      bool           `json:"allow_stdin"`
		// StopOnError false: cells are sent one at a time, and an interrupted cell must not
		// make the kernel abort the next one.
		StopOnError bool `json:"stop_on_error"`
	}
	streamContent struct {
		Name string
		Text string
	}
	// displayContent is display_data, update_display_data and execute_result.
	displayContent struct {
		Data      fields
		DisplayID string // transient.display_id
	}
	errorContent struct {
		Ename     string
		Evalue    string
		Traceback []string
	}
	executeReply struct {
		Status         string
		ExecutionCount int
		errorContent
	}
)

func streamOf(f fields) streamContent {
	return streamContent{Name: f.str("name"), Text: f.str("text")}
}

func displayOf(f fields) displayContent {
	return displayContent{Data: f.object("data"), DisplayID: f.object("transient").str("display_id")}
}

func errorOf(f fields) errorContent {
	return errorContent{Ename: f.str("ename"), Evalue: f.str("evalue"), Traceback: f.strs("traceback")}
}

func replyOf(f fields) executeReply {
	return executeReply{Status: f.str("status"), ExecutionCount: f.integer("execution_count"), errorContent: errorOf(f)}
}
