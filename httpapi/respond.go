package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/internal/httpjson"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// errorBody is every error answer: ms-enclave's {"detail": "..."} plus a code that names
// the kind of error for programs (client.Remote maps it back to the same sentinel errors).
type errorBody struct {
	Detail string      `json:"detail"`
	Code   client.Code `json:"code"`
}

// writeJSON writes v with status. Every success is exactly 200: ms-enclave's client takes
// anything else (a 201 from create) as a failure.
func writeJSON(w http.ResponseWriter, status int, v any) {
	httpjson.Write(w, status, v, func(err error) any {
		return errorBody{Detail: "encoding the answer: " + err.Error(), Code: client.CodeInternal}
	})
}

// failErr answers err with the status its kind calls for.
func (a *API) failErr(w http.ResponseWriter, r *http.Request, err error) {
	code := api.CodeOf(err)
	a.fail(w, r, code.Status(), code, err.Error())
}

// fail answers with a JSON error. The detail starts with a capital letter, as ms-enclave's
// do: its harnesses match "Timeout waiting for available sandbox" verbatim.
func (a *API) fail(w http.ResponseWriter, r *http.Request, status int, code client.Code, detail string) {
	if first, size := utf8.DecodeRuneInString(detail); first != utf8.RuneError {
		detail = string(unicode.ToUpper(first)) + detail[size:]
	}
	log := a.log.With("request_id", requestIDFrom(r.Context()), "status", status, "code", code, "detail", detail)
	if status >= 500 {
		log.Error("request failed")
	} else {
		log.Debug("request refused")
	}
	writeJSON(w, status, errorBody{Detail: detail, Code: code})
}

// readBody reads a JSON request body of at most MaxJSONBytes; nil for an empty one.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxJSONBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, fmt.Errorf("%w: the request body is larger than the %d-byte limit", client.ErrTooLarge, a.cfg.MaxJSONBytes)
		}
		return nil, fmt.Errorf("%w: reading the request body: %w", client.ErrBadRequest, err)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// decodeBody decodes a JSON object body into v. Unknown fields are ignored on purpose:
// ms-enclave's client sends every field of its own config model (pull_progress,
// resource_limits, ...). It reports whether there was a body.
func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any) (bool, error) {
	data, err := a.readBody(w, r)
	if err != nil || data == nil {
		return false, err
	}
	if data[0] != '{' && string(data) != "null" {
		return false, fmt.Errorf("%w: the request body must be a JSON object", client.ErrBadRequest)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, describeJSONError(err)
	}
	return true, nil
}

// decodeConfig decodes a sandbox config body; nil when there is none. Older ms-enclave
// clients send volumes as {host_path: container_path}: those are read as {"bind": path} so
// that the operator's policy refuses them by name (403 "volumes"), as it does the newer form,
// instead of the decoder refusing their type.
func (a *API) decodeConfig(w http.ResponseWriter, r *http.Request) (*sandbox.Config, error) {
	var fields map[string]json.RawMessage
	ok, err := a.decodeBody(w, r, &fields)
	if err != nil || !ok {
		return nil, err
	}
	if raw, found := fields["volumes"]; found {
		var short map[string]string
		if json.Unmarshal(raw, &short) == nil {
			long := make(map[string]sandbox.VolumeMount, len(short))
			for host, bind := range short {
				long[host] = sandbox.VolumeMount{Bind: bind, Mode: "rw"}
			}
			fields["volumes"], _ = json.Marshal(long)
		}
	}
	data, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("%w: re-encoding the config: %w", client.ErrBadRequest, err)
	}
	var cfg sandbox.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, describeJSONError(err)
	}
	return &cfg, nil
}

// describeJSONError says what is wrong with a body in words a client can act on.
func describeJSONError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("%w: malformed JSON at byte %d: %w", client.ErrBadRequest, se.Offset, err)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		return fmt.Errorf("%w: field %q must be %s, got a JSON %s", client.ErrBadRequest, te.Field, te.Type.Kind(), te.Value)
	}
	return fmt.Errorf("%w: %w", client.ErrBadRequest, err)
}
