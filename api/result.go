package api

import (
	"strings"
	"time"
)

// ResultStatus is a tool result's outcome, with ms-enclave's values (its clients branch on
// them).
type ResultStatus string

// The outcomes.
const (
	ResultSuccess   ResultStatus = "success"
	ResultError     ResultStatus = "error"
	ResultTimeout   ResultStatus = "timeout"
	ResultCancelled ResultStatus = "cancelled"
)

// ToolResult is what a tool returns, in ms-enclave's ToolResult shape plus the fields a
// program needs to tell outcomes apart (exit code, signal, truncation, OOM).
type ToolResult struct {
	Status   ResultStatus `json:"status"`
	ToolName string       `json:"tool_name"`
	// Output is stdout, or what the operation produced.
	Output string `json:"output"`
	// Error is stderr and, for failures, what went wrong.
	Error string `json:"error"`
	// ExecutionTime is in seconds.
	ExecutionTime float64        `json:"execution_time"`
	ExitCode      *int           `json:"exit_code,omitempty"`
	Signal        string         `json:"signal,omitempty"`
	Truncated     bool           `json:"truncated"`
	OOMKilled     bool           `json:"oom_killed,omitempty"`
	Metadata      map[string]any `json:"metadata"`
	Timestamp     time.Time      `json:"timestamp"`
	// Images are rich outputs (plots); over MCP each becomes an image content block, and
	// structured results list them without their bytes.
	Images []Image `json:"images,omitempty"`
}

// Image is one image a tool produced.
type Image struct {
	MIMEType string `json:"mime_type"`
	Data     []byte `json:"-"`
	Size     int    `json:"size"`
	Width    int    `json:"width,omitempty"`
	Height   int    `json:"height,omitempty"`
}

// OK reports whether the result is a success.
func (r ToolResult) OK() bool { return r.Status == ResultSuccess }

// Text is the result as a person (or a model) reads it: output, then errors.
func (r ToolResult) Text() string {
	text := r.Output
	if r.Error != "" {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += r.Error
	}
	if text == "" {
		switch r.Status {
		case ResultSuccess:
			return "(no output)"
		default:
			return string(r.Status)
		}
	}
	return text
}
