package api

import (
	"context"
	"errors"
	"net/http"
)

// Sentinel errors callers branch on with errors.Is. Each is one variable, re-exported under
// its old name by package sandbox, tools or client, so both sides of the wire compare equal.
var (
	// ErrNotFound: no such sandbox, tool, file, program or job.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the sandbox was stopped or removed, or its container died.
	ErrClosed = errors.New("sandbox is not running")
	// ErrEngine: the container engine could not be reached or refused a call.
	ErrEngine = errors.New("container engine error")
	// ErrPolicy marks a config the operator's policy refuses (403).
	ErrPolicy = errors.New("refused by policy")
	// ErrInvalidConfig marks a config that cannot be understood (400).
	ErrInvalidConfig = errors.New("invalid sandbox config")
	// ErrManagerClosed: the manager is shutting down and creates nothing more.
	ErrManagerClosed = errors.New("sandbox manager is shut down")
	// ErrLimit: a cap on the number of sandboxes (in total or per owner) was reached.
	ErrLimit = errors.New("sandbox limit reached")
	// ErrPoolEmpty: the pool holds no sandboxes; it must be initialized (grown) first.
	ErrPoolEmpty = errors.New("the sandbox pool is empty: initialize the pool first")
	// ErrPoolTimeout: every pooled sandbox stayed busy for the whole wait.
	ErrPoolTimeout = errors.New("timeout waiting for available sandbox")
	// ErrInvalidArgs marks arguments a tool cannot take; the message says which and why.
	ErrInvalidArgs = errors.New("invalid arguments")
	// ErrUnauthorized: the token is missing or wrong.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrInvalidArchive: an uploaded tar cannot be extracted (a path escaping the target
	// directory, a symlink, a device, a corrupt stream).
	ErrInvalidArchive = errors.New("invalid archive")
	// ErrTooLarge: a body, an archive or a download is over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrBadRequest: a request that cannot be understood (malformed JSON, a bad query value).
	ErrBadRequest = errors.New("bad request")
	// ErrExists: something created under a name the caller already uses (a named session).
	ErrExists = errors.New("already exists")
	// ErrNoSpace: a write failed for want of space: a named session's workspace is full.
	ErrNoSpace = errors.New("no space left")
)

// Code names an error's kind on the wire. The REST API sends it beside "detail" so that
// the REST client hands back the same sentinel errors as the in-process manager.
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
	CodeExists           Code = "exists"
	CodeShuttingDown     Code = "shutting_down"
	CodeEngine           Code = "engine"
	CodeTimeout          Code = "timeout"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeInternal         Code = "internal"
)

// codeEntry is one error kind that has a sentinel error: the sentinel, the HTTP status the
// API answers it with, and whether a bare status (from a server that sends no code) stands
// for it.
type codeEntry struct {
	code     Code
	err      error
	status   int
	fallback bool
}

// codes is the one table of error kinds that have a sentinel error. CodeOf tries the
// sentinels in this order, so the more specific come first.
func codes() []codeEntry {
	return []codeEntry{
		{CodeUnauthorized, ErrUnauthorized, http.StatusUnauthorized, true},
		{CodePoolTimeout, ErrPoolTimeout, http.StatusRequestTimeout, true},
		{CodePoolEmpty, ErrPoolEmpty, http.StatusConflict, false},
		{CodeLimit, ErrLimit, http.StatusTooManyRequests, true},
		{CodePolicy, ErrPolicy, http.StatusForbidden, true},
		{CodeInvalidConfig, ErrInvalidConfig, http.StatusBadRequest, false},
		{CodeInvalidArguments, ErrInvalidArgs, http.StatusBadRequest, false},
		{CodeInvalidArchive, ErrInvalidArchive, http.StatusBadRequest, false},
		{CodeTooLarge, ErrTooLarge, http.StatusRequestEntityTooLarge, true},
		{CodeBadRequest, ErrBadRequest, http.StatusBadRequest, true},
		{CodeNotFound, ErrNotFound, http.StatusNotFound, true},
		{CodeSandboxStopped, ErrClosed, http.StatusConflict, false},
		{CodeShuttingDown, ErrManagerClosed, http.StatusServiceUnavailable, false},
		{CodeEngine, ErrEngine, http.StatusInternalServerError, false},
		{CodeTimeout, context.DeadlineExceeded, http.StatusGatewayTimeout, false},
		{CodeExists, ErrExists, http.StatusConflict, false},
		{CodeNoSpace, ErrNoSpace, http.StatusInsufficientStorage, true},
	}
}

// Coded is implemented by errors that know their own kind, such as the failures a
// sandbox's agent reports.
type Coded interface {
	error
	APICode() Code
}

// CodeOf classifies err: by the first sentinel of the table it matches, else by the code of
// a Coded error in its chain, else CodeInternal.
func CodeOf(err error) Code {
	for _, c := range codes() {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	if coded, ok := errors.AsType[Coded](err); ok {
		return coded.APICode()
	}
	return CodeInternal
}

// Err is the sentinel error for code, or nil when it has none.
func (c Code) Err() error {
	for _, e := range codes() {
		if e.code == c {
			return e.err
		}
	}
	return nil
}

// Status is the HTTP status the API answers code with.
func (c Code) Status() int {
	for _, e := range codes() {
		if e.code == c {
			return e.status
		}
	}
	switch c {
	case CodePermission:
		return http.StatusForbidden
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

// ErrForStatus returns the sentinel a bare HTTP status stands for (an answer from a server
// that sends no code), or nil when the status is ambiguous.
func ErrForStatus(status int) error {
	for _, c := range codes() {
		if c.fallback && c.status == status {
			return c.err
		}
	}
	return nil
}
