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

// codes is the one table of error kinds that have a sentinel error: the sentinel, the HTTP
// status the API answers it with, and whether a bare status (from a server that sends no
// code) stands for it. CodeOf tries the sentinels in this order, so the more specific come
// first.
var codes = []struct {
	code     Code
	err      error
	status   int
	fallback bool
}{
	{CodeUnauthorized, ErrUnauthorized, http.StatusUnauthorized, true},
	{CodePoolTimeout, sandbox.ErrPoolTimeout, http.StatusRequestTimeout, true},
	{CodePoolEmpty, sandbox.ErrPoolEmpty, http.StatusConflict, false},
	{CodeLimit, sandbox.ErrLimit, http.StatusTooManyRequests, true},
	{CodePolicy, sandbox.ErrPolicy, http.StatusForbidden, true},
	{CodeInvalidConfig, sandbox.ErrInvalidConfig, http.StatusBadRequest, false},
	{CodeInvalidArguments, tools.ErrInvalidArgs, http.StatusBadRequest, false},
	{CodeInvalidArchive, ErrInvalidArchive, http.StatusBadRequest, false},
	{CodeTooLarge, ErrTooLarge, http.StatusRequestEntityTooLarge, true},
	{CodeBadRequest, ErrBadRequest, http.StatusBadRequest, true},
	{CodeNotFound, sandbox.ErrNotFound, http.StatusNotFound, true},
	{CodeSandboxStopped, sandbox.ErrClosed, http.StatusConflict, false},
	{CodeShuttingDown, sandbox.ErrManagerClosed, http.StatusServiceUnavailable, false},
	{CodeEngine, sandbox.ErrEngine, http.StatusInternalServerError, false},
	{CodeTimeout, context.DeadlineExceeded, http.StatusGatewayTimeout, false},
}

// CodeOf classifies err: by the first sentinel of the table it matches, else by what the
// sandbox's agent said.
func CodeOf(err error) Code {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	var agentErr *sandbox.AgentError
	if errors.As(err, &agentErr) {
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
	}
	return CodeInternal
}

// Err is the sentinel error for code, or nil when it has none.
func (c Code) Err() error {
	for _, e := range codes {
		if e.code == c {
			return e.err
		}
	}
	return nil
}

// Status is the HTTP status the API answers code with.
func (c Code) Status() int {
	for _, e := range codes {
		if e.code == c {
			return e.status
		}
	}
	switch c {
	case CodePermission:
		return http.StatusForbidden
	case CodeNoSpace:
		return http.StatusInsufficientStorage
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
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
	for _, c := range codes {
		if c.fallback && c.status == e.StatusCode {
			return c.err
		}
	}
	return nil
}
