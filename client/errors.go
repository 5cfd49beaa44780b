package client

import (
	"fmt"
	"net/http"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// Errors callers branch on with errors.Is. They are the api package's variables, so an error
// from Remote matches the same sentinel as the server's own (api.ErrNotFound, ErrPolicy,
// ErrInvalidConfig, ErrClosed, ErrLimit, ErrPoolEmpty, ErrPoolTimeout, ...).
var (
	// ErrUnauthorized: the token is missing or wrong.
	ErrUnauthorized = api.ErrUnauthorized
	// ErrInvalidArchive: an uploaded tar cannot be extracted (a path escaping the target
	// directory, a symlink, a device, a corrupt stream).
	ErrInvalidArchive = api.ErrInvalidArchive
	// ErrTooLarge: a body, an archive or a download is over its limit.
	ErrTooLarge = api.ErrTooLarge
	// ErrBadRequest: a request that cannot be understood (malformed JSON, a bad query value).
	ErrBadRequest = api.ErrBadRequest
	// ErrNotFound: no such sandbox, tool, file or job.
	ErrNotFound = api.ErrNotFound
	// ErrPolicy: the operator's policy refuses the config.
	ErrPolicy = api.ErrPolicy
	// ErrInvalidConfig: the config cannot be understood.
	ErrInvalidConfig = api.ErrInvalidConfig
	// ErrClosed: the sandbox was stopped or removed.
	ErrClosed = api.ErrClosed
	// ErrLimit: a cap on the number of sandboxes was reached.
	ErrLimit = api.ErrLimit
	// ErrPoolEmpty: the pool must be initialized first.
	ErrPoolEmpty = api.ErrPoolEmpty
	// ErrPoolTimeout: no pooled sandbox freed up in time.
	ErrPoolTimeout = api.ErrPoolTimeout
)

// Code names an error's kind on the wire; see api.Code.
type Code = api.Code

// The error codes.
const (
	CodeUnauthorized     = api.CodeUnauthorized
	CodeNotFound         = api.CodeNotFound
	CodePolicy           = api.CodePolicy
	CodeInvalidConfig    = api.CodeInvalidConfig
	CodeInvalidArguments = api.CodeInvalidArguments
	CodeInvalidArchive   = api.CodeInvalidArchive
	CodeBadRequest       = api.CodeBadRequest
	CodeTooLarge         = api.CodeTooLarge
	CodeLimit            = api.CodeLimit
	CodePoolEmpty        = api.CodePoolEmpty
	CodePoolTimeout      = api.CodePoolTimeout
	CodeSandboxStopped   = api.CodeSandboxStopped
	CodePermission       = api.CodePermission
	CodeNoSpace          = api.CodeNoSpace
	CodeShuttingDown     = api.CodeShuttingDown
	CodeEngine           = api.CodeEngine
	CodeTimeout          = api.CodeTimeout
	CodeMethodNotAllowed = api.CodeMethodNotAllowed
	CodeInternal         = api.CodeInternal
)

// APIError is an error answer of the HTTP API. errors.Is matches it against the sentinel
// of its code (or, from a server that sends no code, of its status).
type APIError struct {
	StatusCode int
	Code       Code
	Detail     string
	RequestID  string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("enclave-mcp: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Detail)
	if e.RequestID != "" {
		msg += " (request " + e.RequestID + ")"
	}
	return msg
}

// Unwrap returns the sentinel error the answer stands for, if any.
func (e *APIError) Unwrap() error {
	if err := e.Code.Err(); err != nil {
		return err
	}
	return api.ErrForStatus(e.StatusCode)
}
