package session

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Multi round-trip requests (MRTR, SEP-2322, protocol 2026-07-28). A call that is not a
// task's has no way to park while its client answers: instead, Ask ends the call with
// *InputRequired, the face answers the request with what it asks, and the client retries
// the same request with the answers (and the state the face handed out). The call then
// runs again from the start, and each Ask it makes is answered from the Round the face
// puts in the retry's context: a question answered in any earlier round is answered again
// at once, so a call may ask in several rounds (each Ask with keys of its own).
//
// A Round also says which kinds of question the client can answer (its declared
// capabilities): asking one it cannot is *MissingCapability, before anything is asked.

// Round is one round of a multi round-trip call: the answers its client has brought so
// far, by key, and the capabilities it declared.
type Round struct {
	answers map[string]json.RawMessage
	caps    map[string]bool // nil: not known (ask whatever the call needs)
	resumed bool

	mu   sync.Mutex // guards used: a call may ask from several goroutines
	used map[string]json.RawMessage
}

// NewRound is a round with answers (earlier rounds' and this request's). caps are the
// capabilities the client declared ("elicitation", "sampling", "roots"), or nil when they
// are not known. resumed says whether the request continues an earlier round (its state
// was verified).
func NewRound(answers map[string]json.RawMessage, caps map[string]bool, resumed bool) *Round {
	return &Round{answers: maps.Clone(answers), caps: caps, resumed: resumed, used: map[string]json.RawMessage{}}
}

// Resumed reports whether the round continues an earlier one.
func (r *Round) Resumed() bool { return r.resumed }

// Declared reports whether the client declared capability; true when its capabilities are
// not known.
func (r *Round) Declared(capability string) bool { return r.caps == nil || r.caps[capability] }

// Answered are the answers the call's Asks have taken so far: what the next round must
// carry (answers to keys no Ask named are dropped).
func (r *Round) Answered() map[string]json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.used)
}

type roundKey struct{}

// WithRound makes r the round of the call ctx is for.
func WithRound(ctx context.Context, r *Round) context.Context {
	return context.WithValue(ctx, roundKey{}, r)
}

// RoundFrom is the round of the call ctx is for, or nil.
func RoundFrom(ctx context.Context) *Round {
	r, _ := ctx.Value(roundKey{}).(*Round)
	return r
}

// InputRequired is Ask's error in a round that lacks answers: the call must end with it,
// and its client be asked Requests (by key; the ones the round has no answer to).
type InputRequired struct {
	Requests map[string]any
}

func (e *InputRequired) Error() string {
	return fmt.Sprintf("the call needs its client's answers to %s (multi round-trip: answer them and retry the call)",
		strings.Join(slices.Sorted(maps.Keys(e.Requests)), ", "))
}

// MissingCapability is Ask's error for a question whose kind the client did not declare
// it can answer.
type MissingCapability struct {
	Capability string // elicitation, sampling or roots
	Method     string
}

func (e *MissingCapability) Error() string {
	return fmt.Sprintf("the call needs to send %s, and the client did not declare the capability %q", e.Method, e.Capability)
}

// capabilityOf is the client capability a request of method needs ("" for none known).
func capabilityOf(method string) string {
	switch method {
	case "elicitation/create":
		return "elicitation"
	case "sampling/createMessage":
		return "sampling"
	case "roots/list":
		return "roots"
	}
	return ""
}

// methodOf is the "method" of request (a map, or anything that encodes to a JSON object).
func methodOf(request any) string {
	if m, ok := request.(map[string]any); ok {
		s, _ := m["method"].(string)
		return s
	}
	raw, err := json.Marshal(request)
	if err != nil {
		return ""
	}
	var r struct {
		Method string `json:"method"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.Method
}

// ask answers requests from the round, or says what is missing.
func (r *Round) ask(requests map[string]any) (map[string]json.RawMessage, error) {
	for _, key := range slices.Sorted(maps.Keys(requests)) {
		method := methodOf(requests[key])
		if capability := capabilityOf(method); capability != "" && !r.Declared(capability) {
			return nil, &MissingCapability{Capability: capability, Method: method}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]json.RawMessage{}
	missing := map[string]any{}
	for key, req := range requests {
		if a, ok := r.answers[key]; ok {
			out[key] = a
			r.used[key] = a
		} else {
			missing[key] = req
		}
	}
	if len(missing) > 0 {
		return nil, &InputRequired{Requests: missing}
	}
	return out, nil
}
