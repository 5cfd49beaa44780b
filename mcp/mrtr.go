package mcp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/session"
)

// Multi round-trip requests (MRTR, SEP-2322). A tool call that asks its client for input
// (session.Ask: an elicitation, a sampling request, the client's roots) and is not a
// task's call ends with an InputRequiredResult: resultType "input_required", the
// questions as inputRequests, and a requestState. The client retries the same call with
// its answers in inputResponses and the requestState echoed; the call runs again from the
// start, and its Asks are answered from the answers (session.Round).
//
// The requestState carries the answers of earlier rounds, so the server keeps nothing
// between rounds (a stateless client may send the next round to any request). It is
// sealed with an HMAC-SHA256 under a key of this server's run (random, made in New) and
// bound to the caller (its session, or its token's principal), the tool and its
// arguments, and it expires RequestStateMaxAge after it was issued: a state altered,
// expired, issued by an earlier run, or presented for another tool, other arguments or by
// another caller is refused with -32602 and a message saying which. Its size is bounded
// (RequestStateMaxBytes): a call whose answers outgrow it fails with a message saying so.
// It is signed, not encrypted: it carries nothing but the client's own answers.
//
// mcp-go v1.2.1 bridges such a result for clients of the older protocols (sessions): it
// sends them the questions as server-initiated requests and calls the handler again with
// the answers, so the same tool works for both eras.

const (
	// RequestStateMaxAge is how long a requestState is accepted after it was issued.
	RequestStateMaxAge = 10 * time.Minute
	// RequestStateMaxBytes bounds a requestState as sent (base64url text).
	RequestStateMaxBytes = 64 << 10
	// stateVersion is the payload format of requestState.
	stateVersion = 1
)

// stateCodec seals and opens requestState tokens: base64url(payload) "." base64url(mac).
type stateCodec struct {
	key    []byte
	maxAge time.Duration
	now    func() time.Time
}

func newStateCodec() (*stateCodec, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("making the requestState key: %w", err)
	}
	return &stateCodec{key: key, maxAge: RequestStateMaxAge, now: time.Now}, nil
}

// roundState is what a requestState carries.
type roundState struct {
	V       int                        `json:"v"`
	Tool    string                     `json:"tool"`
	Bind    string                     `json:"bind"` // hash of the caller and the arguments
	Issued  int64                      `json:"iat"`  // unix seconds
	Answers map[string]json.RawMessage `json:"answers,omitempty"`
}

// binding is the hash a state is bound to: the caller and the call's arguments, in a
// canonical form (object keys sorted, numbers as written), so a client that re-encodes the
// same arguments is not refused.
func binding(owner string, args json.RawMessage) string {
	h := sha256.New()
	h.Write([]byte(owner))
	h.Write([]byte{0})
	h.Write(canonicalJSON(args))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// canonicalJSON is raw re-encoded with sorted object keys and numbers kept as written;
// raw itself when it is not JSON.
func canonicalJSON(raw json.RawMessage) []byte {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

func (c *stateCodec) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(payload)
	return m.Sum(nil)
}

// seal is the requestState of a round of tool for owner's call with args, carrying answers.
func (c *stateCodec) seal(owner, tool string, args json.RawMessage, answers map[string]json.RawMessage) (string, error) {
	payload, err := json.Marshal(roundState{V: stateVersion, Tool: tool, Bind: binding(owner, args), Issued: c.now().Unix(), Answers: answers})
	if err != nil {
		return "", fmt.Errorf("encoding the requestState: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(c.mac(payload))
	if len(token) > RequestStateMaxBytes {
		return "", fmt.Errorf("the answers gathered so far make a requestState of %d bytes, over the %d-byte limit: ask for less",
			len(token), RequestStateMaxBytes)
	}
	return token, nil
}

// errBadState is the class of every refused requestState.
var errBadState = errors.New("requestState refused")

// open verifies token for owner's call of tool with args and returns its answers.
func (c *stateCodec) open(token, owner, tool string, args json.RawMessage) (map[string]json.RawMessage, error) {
	if len(token) > RequestStateMaxBytes {
		return nil, fmt.Errorf("%w: it is %d bytes, over the %d-byte limit of the states this server issues", errBadState, len(token), RequestStateMaxBytes)
	}
	enc, sig, ok := strings.Cut(token, ".")
	payload, err1 := base64.RawURLEncoding.DecodeString(enc)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: it is not a requestState this server issued (malformed); send back the requestState of the last input_required result unchanged, or call again without one", errBadState)
	}
	if !hmac.Equal(mac, c.mac(payload)) {
		return nil, fmt.Errorf("%w: its integrity check failed (it was altered, or issued by another run of this server); send back the requestState of the last input_required result unchanged, or call again without one", errBadState)
	}
	var st roundState
	if err := json.Unmarshal(payload, &st); err != nil || st.V != stateVersion {
		return nil, fmt.Errorf("%w: unknown format; call again without one", errBadState)
	}
	if st.Tool != tool {
		return nil, fmt.Errorf("%w: it was issued for the tool %q, not %q", errBadState, st.Tool, tool)
	}
	if st.Bind != binding(owner, args) {
		return nil, fmt.Errorf("%w: it was issued for other arguments (or another caller); retry with the arguments of the first call", errBadState)
	}
	if age := c.now().Sub(time.Unix(st.Issued, 0)); age > c.maxAge || age < -time.Minute {
		return nil, fmt.Errorf("%w: it expired (issued %s ago; a round must be answered within %s); call again without one",
			errBadState, age.Round(time.Second), c.maxAge)
	}
	return st.Answers, nil
}

// roundOf is the Round of a tool call: the answers of its verified requestState plus the
// inputResponses it brings, and the client's declared capabilities (known for 2026-07-28
// requests, which declare them on each request). A refused state, or an answer that is
// not a JSON object, is a protocol error (-32602).
func (s *Server) roundOf(ctx context.Context, c caller, tool string, args json.RawMessage, p mcp.MultiRoundTripParams) (*session.Round, *rpcError) {
	answers := map[string]json.RawMessage{}
	resumed := false
	if p.RequestState != "" {
		prior, err := s.states.open(p.RequestState, taskOwner(c), tool, args)
		if err != nil {
			return nil, &rpcError{code: mcp.INVALID_PARAMS, msg: tool + ": " + err.Error()}
		}
		maps.Copy(answers, prior)
		resumed = true
	}
	for _, key := range slices.Sorted(maps.Keys(p.InputResponses)) {
		raw, err := json.Marshal(p.InputResponses[key])
		if err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
			return nil, &rpcError{code: mcp.INVALID_PARAMS, msg: fmt.Sprintf(
				"%s: inputResponses[%q] is %s; want an object, the client's result for the request of that key (an elicitation, sampling or roots/list result)",
				tool, key, jsonText(json.RawMessage(raw)))}
		}
		answers[key] = raw
	}
	var caps map[string]bool
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern && info.ClientCapabilities != nil {
		cc := info.ClientCapabilities
		caps = map[string]bool{"elicitation": cc.Elicitation != nil, "sampling": cc.Sampling != nil, "roots": cc.Roots != nil}
	}
	return session.NewRound(answers, caps, resumed), nil
}

// inputRequired is the answer to a call that ended asking for input (ir): the questions
// and the state that carries the round's answers, or the error that says why there is
// none.
func (s *Server) inputRequired(c caller, tool string, args json.RawMessage, round *session.Round, ir *session.InputRequired) (*mcp.CallToolResult, error) {
	raw, err := json.Marshal(ir.Requests)
	var requests mcp.InputRequests
	if err == nil {
		err = json.Unmarshal(raw, &requests)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: encoding its inputRequests: %w", tool, err)
	}
	state, err := s.states.seal(taskOwner(c), tool, args, round.Answered())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	return &mcp.CallToolResult{
		Result:               mcp.Result{ResultType: mcp.ResultTypeInputRequired},
		Content:              []mcp.Content{},
		MultiRoundTripResult: mcp.MultiRoundTripResult{InputRequests: requests, RequestState: state},
	}, nil
}

// rpcError is a JSON-RPC error a tool call ends with instead of a result: over /mcp the
// middleware answers with it (code, message, data, and the HTTP status of 2026-07-28);
// elsewhere mcp-go answers with its message as an internal error.
type rpcError struct {
	code int
	msg  string
	data any
}

func (e *rpcError) Error() string { return e.msg }

// missingCapability is the protocol error of a call that needs a client capability the
// request did not declare (-32021, data.requiredCapabilities naming it).
func missingCapability(tool string, mc *session.MissingCapability) *rpcError {
	return &rpcError{code: mcp.MISSING_REQUIRED_CLIENT_CAPABILITY,
		msg:  fmt.Sprintf("%s: %s: declare it in the request's _meta %q", tool, mc.Error(), mcp.MetaKeyClientCapabilities),
		data: map[string]any{"requiredCapabilities": map[string]any{mc.Capability: map[string]any{}}}}
}

// failCall ends a tool call with e: it is noted for the middleware, and returned as the
// handler's error for transports without it.
func failCall(ctx context.Context, e *rpcError) (*mcp.CallToolResult, error) {
	if slot, ok := ctx.Value(replySlotKey{}).(*replySlot); ok {
		slot.set(e)
	}
	return nil, e
}

// askOutcome maps a call's error that is about asking its client (session.Ask) to the
// call's answer: an InputRequiredResult, or a protocol error. handled is false for any
// other error.
func (s *Server) askOutcome(ctx context.Context, c caller, tool string, args json.RawMessage, round *session.Round, err error) (out *mcp.CallToolResult, rerr error, handled bool) {
	if ir, ok := errors.AsType[*session.InputRequired](err); ok && round != nil {
		out, rerr = s.inputRequired(c, tool, args, round, ir)
		return out, rerr, true
	}
	if mc, ok := errors.AsType[*session.MissingCapability](err); ok {
		out, rerr = failCall(ctx, missingCapability(tool, mc))
		return out, rerr, true
	}
	return nil, nil, false
}

// replySlot lets a tool handler replace the response mcp-go writes with a JSON-RPC error.
type replySlot struct {
	mu  sync.Mutex
	err *rpcError
}

type replySlotKey struct{}

func (r *replySlot) set(e *rpcError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = e
}

func (r *replySlot) get() *rpcError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// replyWriter passes mcp-go's response through, unless its handler noted an error in the
// slot before the response began: then it writes that error instead and drops mcp-go's.
type replyWriter struct {
	http.ResponseWriter
	id      json.RawMessage
	slot    *replySlot
	decided bool
	drop    bool
}

func (w *replyWriter) decide() {
	if w.decided {
		return
	}
	w.decided = true
	if e := w.slot.get(); e != nil {
		w.drop = true
		w.ResponseWriter.Header().Del("Content-Length")
		writeRPCErrorData(w.ResponseWriter, rpcStatus(e.code), w.id, e.code, e.msg, e.data)
	}
}

func (w *replyWriter) WriteHeader(status int) {
	w.decide()
	if !w.drop {
		w.ResponseWriter.WriteHeader(status)
	}
}

func (w *replyWriter) Write(p []byte) (int, error) {
	w.decide()
	if w.drop {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *replyWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.drop {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController (write deadlines) the underlying writer.
func (w *replyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rpcStatus is the HTTP status of a JSON-RPC error code (protocol 2026-07-28).
func rpcStatus(code int) int {
	switch code {
	case mcp.INVALID_PARAMS, mcp.MISSING_REQUIRED_CLIENT_CAPABILITY, mcp.HEADER_MISMATCH, mcp.INVALID_REQUEST:
		return http.StatusBadRequest
	case mcp.METHOD_NOT_FOUND:
		return http.StatusNotFound
	}
	return http.StatusOK
}
