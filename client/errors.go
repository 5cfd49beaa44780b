package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Errors of this package, for errors.Is. Others come from package sandbox (ErrNotFound,
// ErrPolicy, ErrInvalidConfig, ErrClosed, ErrLimit, ErrPoolEmpty, ErrPoolTimeout, ...).
var (
	// ErrUnauthorized: the token is missing or wrong.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrInvalidArchive: an uploaded tar cannot be extracted (a path escaping the target
	// directory, a symlink, a device, a corrupt stream).
	ErrInvalidArchive = errors.New("invalid archive")
	// ErrTooLarge: a body, an archive or a download is over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrBadRequest: a request that cannot be understood (malformed JSON, a bad query value).
	ErrBadRequest = errors.New("bad request")
)

// Code names an error's kind on the wire. The HTTP API sends it beside "detail" so that
// Remote hands back the same sentinel errors as Local.
type Code string

// The error codes.
const (
	CodeUnauthorized     Code = "unauthorized"
	CodeNotFound         Code = "not_found"
	CodePolicy           Code = "policy"
	CodeInvalidConfig    Code = "invalid_config"
	CodeInvalidArguments Code = "invalid_arguments"
	CodeInvalidArchive   Code = "invalid_archive"
	CodeBadRequest       Code = "bad_request"
	CodeTooLarge         Code = "too_large"
	CodeLimit            Code = "limit"
	CodePoolEmpty        Code = "pool_empty"
	CodePoolTimeout      Code = "pool_timeout"
	CodeSandboxStopped   Code = "sandbox_stopped"
	CodePermission       Code = "permission_denied"
	CodeNoSpace          Code = "no_space"
	CodeShuttingDown     Code = "shutting_down"
	CodeEngine           Code = "engine"
	CodeTimeout          Code = "timeout"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeInternal         Code = "internal"
)

// CodeOf classifies err. The order matters where an error matches more than one sentinel:
// the most specific wins.
func CodeOf(err error) Code {
	var agentErr *sandbox.AgentError
	switch {
	case errors.Is(err, ErrUnauthorized):
		return CodeUnauthorized
	case errors.Is(err, sandbox.ErrPoolTimeout):
		return CodePoolTimeout
	case errors.Is(err, sandbox.ErrPoolEmpty):
		return CodePoolEmpty
	case errors.Is(err, sandbox.ErrLimit):
		return CodeLimit
	case errors.Is(err, sandbox.ErrPolicy):
		return CodePolicy
	case errors.Is(err, sandbox.ErrInvalidConfig):
		return CodeInvalidConfig
	case errors.Is(err, tools.ErrInvalidArgs):
		return CodeInvalidArguments
	case errors.Is(err, ErrInvalidArchive):
		return CodeInvalidArchive
	case errors.Is(err, ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, sandbox.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, sandbox.ErrClosed):
		return CodeSandboxStopped
	case errors.Is(err, sandbox.ErrManagerClosed):
		return CodeShuttingDown
	case errors.Is(err, sandbox.ErrEngine):
		return CodeEngine
	case errors.As(err, &agentErr):
		switch agentErr.Code {
		case wire.CodePermission:
			return CodePermission
		case wire.CodeNoSpace:
			return CodeNoSpace
		case wire.CodeTooLarge:
			return CodeTooLarge
		case wire.CodeInternal:
			return CodeInternal
		}
		return CodeBadRequest // invalid, exists, is_dir, not_dir, not_empty: the request's fault
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	}
	return CodeInternal
}

// Err is the sentinel error for code, or nil when it has none.
func (c Code) Err() error {
	switch c {
	case CodeUnauthorized:
		return ErrUnauthorized
	case CodeNotFound:
		return sandbox.ErrNotFound
	case CodePolicy:
		return sandbox.ErrPolicy
	case CodeInvalidConfig:
		return sandbox.ErrInvalidConfig
	case CodeInvalidArguments:
		return tools.ErrInvalidArgs
	case CodeInvalidArchive:
		return ErrInvalidArchive
	case CodeBadRequest:
		return ErrBadRequest
	case CodeTooLarge:
		return ErrTooLarge
	case CodeLimit:
		return sandbox.ErrLimit
	case CodePoolEmpty:
		return sandbox.ErrPoolEmpty
	case CodePoolTimeout:
		return sandbox.ErrPoolTimeout
	case CodeSandboxStopped:
		return sandbox.ErrClosed
	case CodeShuttingDown:
		return sandbox.ErrManagerClosed
	case CodeEngine:
		return sandbox.ErrEngine
	case CodeTimeout:
		return context.DeadlineExceeded
	}
	return nil
}

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
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusNotFound:
		return sandbox.ErrNotFound
	case http.StatusForbidden:
		return sandbox.ErrPolicy
	case http.StatusRequestTimeout:
		return sandbox.ErrPoolTimeout
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusTooManyRequests:
		return sandbox.ErrLimit
	case http.StatusBadRequest:
		return ErrBadRequest
	}
	return nil
}
