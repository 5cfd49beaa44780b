package client

import (
	"errors"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The sentinels are named through package sandbox on purpose: an error the server returns
// and the one Remote hands back must be the same variable, whatever name a program uses.
func TestCodesRoundTrip(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		sandbox.ErrNotFound, sandbox.ErrPolicy, sandbox.ErrInvalidConfig, sandbox.ErrPoolEmpty, sandbox.ErrPoolTimeout,
		sandbox.ErrLimit, sandbox.ErrClosed, sandbox.ErrEngine, ErrInvalidArchive, ErrTooLarge, ErrBadRequest, ErrUnauthorized,
		ErrExists, ErrNoSpace,
	} {
		wrapped := errors.Join(errors.New("context"), err)
		code := api.CodeOf(wrapped)
		if back := (&APIError{StatusCode: 500, Code: code}); !errors.Is(back, err) {
			t.Errorf("%v -> %s -> does not match again", err, code)
		}
	}
	if got := api.CodeOf(&sandbox.AgentError{Code: "permission", Message: "read-only file system"}); got != CodePermission {
		t.Errorf("agent permission error -> %s", got)
	}
}

// TestStatusesOfCodes pins the HTTP status of each kind, and what a bare status (a server
// that sends no code) is taken to mean.
func TestStatusesOfCodes(t *testing.T) {
	t.Parallel()
	statuses := map[Code]int{
		CodeUnauthorized: 401, CodeNotFound: 404, CodePolicy: 403, CodePermission: 403,
		CodeInvalidConfig: 400, CodeInvalidArguments: 400, CodeInvalidArchive: 400, CodeBadRequest: 400,
		CodeMethodNotAllowed: 405, CodeTooLarge: 413, CodeLimit: 429, CodePoolEmpty: 409,
		CodeSandboxStopped: 409, CodePoolTimeout: 408, CodeNoSpace: 507, CodeShuttingDown: 503,
		CodeTimeout: 504, CodeEngine: 500, CodeInternal: 500, CodeExists: 409,
	}
	for code, want := range statuses {
		if got := code.Status(); got != want {
			t.Errorf("%s.Status() = %d, want %d", code, got, want)
		}
	}
	bare := map[int]error{401: ErrUnauthorized, 404: sandbox.ErrNotFound, 403: sandbox.ErrPolicy,
		408: sandbox.ErrPoolTimeout, 413: ErrTooLarge, 429: sandbox.ErrLimit, 400: ErrBadRequest, 507: ErrNoSpace}
	for status, want := range bare {
		if got := (&APIError{StatusCode: status}).Unwrap(); got != want {
			t.Errorf("bare %d unwraps to %v, want %v", status, got, want)
		}
	}
	if got := (&APIError{StatusCode: 409}).Unwrap(); got != nil {
		t.Errorf("a bare 409 is ambiguous and must unwrap to nothing, got %v", got)
	}
}
