package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/session"
)

// TestAskInRound: in a multi round-trip call, Ask answers from the round's answers, asks
// (InputRequired) only what has no answer yet, refuses a kind of question the client did
// not declare, and carries forward only the answers it took.
func TestAskInRound(t *testing.T) {
	t.Parallel()
	elicit := map[string]any{"method": "elicitation/create", "params": map[string]any{"message": "name?"}}
	sample := map[string]any{"method": "sampling/createMessage", "params": map[string]any{"maxTokens": 10}}
	roots := map[string]any{"method": "roots/list", "params": map[string]any{}}
	yes := json.RawMessage(`{"action":"accept","content":{"name":"Alice"}}`)
	all := map[string]bool{"elicitation": true, "sampling": true, "roots": true}

	for _, tc := range []struct {
		name     string
		answers  map[string]json.RawMessage
		caps     map[string]bool
		ask      map[string]any
		want     []string // keys answered; nil when it must not answer
		asked    []string // keys of InputRequired
		missing  string   // capability of MissingCapability
		answered []string // Round.Answered after
	}{
		{name: "first round: everything is asked", caps: all, ask: map[string]any{"user_name": elicit}, asked: []string{"user_name"}},
		{name: "answered", answers: map[string]json.RawMessage{"user_name": yes}, caps: all,
			ask: map[string]any{"user_name": elicit}, want: []string{"user_name"}, answered: []string{"user_name"}},
		{name: "partly answered: only the rest is asked", answers: map[string]json.RawMessage{"a": yes}, caps: all,
			ask: map[string]any{"a": elicit, "b": roots}, asked: []string{"b"}, answered: []string{"a"}},
		{name: "extra answers are not carried forward", answers: map[string]json.RawMessage{"a": yes, "extra": yes}, caps: all,
			ask: map[string]any{"a": elicit}, want: []string{"a"}, answered: []string{"a"}},
		{name: "sampling without the capability", caps: map[string]bool{"elicitation": true},
			ask: map[string]any{"q": sample}, missing: "sampling"},
		{name: "a capability missing refuses even an answered question", answers: map[string]json.RawMessage{"r": yes},
			caps: map[string]bool{}, ask: map[string]any{"r": roots}, missing: "roots"},
		{name: "capabilities not known: asked", caps: nil, ask: map[string]any{"q": sample}, asked: []string{"q"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			round := session.NewRound(tc.answers, tc.caps, false)
			got, err := session.Ask(session.WithRound(context.Background(), round), tc.ask)
			ir, isIR := errors.AsType[*session.InputRequired](err)
			mc, isMC := errors.AsType[*session.MissingCapability](err)
			switch {
			case tc.missing != "":
				if !isMC || mc.Capability != tc.missing {
					t.Fatalf("Ask: %v; want MissingCapability %q", err, tc.missing)
				}
			case tc.asked != nil:
				if !isIR || !slices.Equal(slices.Sorted(maps.Keys(ir.Requests)), tc.asked) {
					t.Fatalf("Ask: %v; want InputRequired asking %v", err, tc.asked)
				}
			default:
				if err != nil || !slices.Equal(slices.Sorted(maps.Keys(got)), tc.want) {
					t.Fatalf("Ask: %v, %v; want answers to %v", got, err, tc.want)
				}
			}
			if keys := slices.Sorted(maps.Keys(round.Answered())); !slices.Equal(keys, tc.answered) {
				t.Errorf("Answered: %v; want %v", keys, tc.answered)
			}
		})
	}
}

// TestAskWithoutRoundOrTask: a call that can ask nothing gets ErrNoInput.
func TestAskWithoutRoundOrTask(t *testing.T) {
	t.Parallel()
	if _, err := session.Ask(context.Background(), map[string]any{"k": map[string]any{"method": "roots/list"}}); !errors.Is(err, session.ErrNoInput) {
		t.Errorf("Ask outside a task and a round: %v; want ErrNoInput", err)
	}
	round := session.NewRound(nil, nil, false)
	if _, err := session.Ask(session.WithRound(context.Background(), round), nil); !errors.Is(err, session.ErrNoInput) {
		t.Errorf("Ask of nothing: %v; want ErrNoInput", err)
	}
}
