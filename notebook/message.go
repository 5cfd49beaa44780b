package notebook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
// JSON form: no subprotocol, so no binary framing unless the message has buffers).
type message struct {
	Header       header          `json:"header"`
	ParentHeader header          `json:"parent_header"`
	Content      json.RawMessage `json:"content"`
	Channel      string          `json:"channel"`
	// truncated counts the bytes cut from strings too large to keep, by the key they sat
	// under (e.g. "text" or "image/png"); nil for messages read whole.
	truncated map[string]int64
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

// The contents this client reads.
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
		Name string `json:"name"`
		Text string `json:"text"`
	}
	// displayContent is display_data, update_display_data and execute_result.
	displayContent struct {
		Data           map[string]any `json:"data"`
		ExecutionCount int            `json:"execution_count"`
		Transient      struct {
			DisplayID string `json:"display_id"`
		} `json:"transient"`
	}
	errorContent struct {
		Ename     string   `json:"ename"`
		Evalue    string   `json:"evalue"`
		Traceback []string `json:"traceback"`
	}
	statusContent struct {
		ExecutionState string `json:"execution_state"`
	}
	executeReply struct {
		Status         string `json:"status"`
		ExecutionCount int    `json:"execution_count"`
		errorContent
	}
	clearOutputContent struct {
		Wait bool `json:"wait"`
	}
)
