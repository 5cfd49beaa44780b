package mcp

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRequestState: a requestState opens only for the caller, tool and arguments it was
// sealed for, unaltered and within its age; each refusal says why.
func TestRequestState(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	codec, err := newStateCodec()
	if err != nil {
		t.Fatal(err)
	}
	codec.now = func() time.Time { return issued }
	args := json.RawMessage(`{"filename": "a.txt"}`)
	answers := map[string]json.RawMessage{"confirm": json.RawMessage(`{"action":"accept","content":{"ok":true}}`)}
	token, err := codec.seal("principal:alice", "confirm_delete", args, answers)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newStateCodec()
	if err != nil {
		t.Fatal(err)
	}
	otherToken, err := other.seal("principal:alice", "confirm_delete", args, answers)
	if err != nil {
		t.Fatal(err)
	}
	enc, sig, _ := strings.Cut(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(enc)
	forged := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `true`, `false`, 1))) + "." + sig
	altered := "A"
	if sig[0] == 'A' {
		altered = "B"
	}
	flipped := enc + "." + altered + sig[1:]

	for _, tc := range []struct {
		name        string
		token       string
		owner, tool string
		args        json.RawMessage
		at          time.Time
		want        string // "" opens
	}{
		{"round trip", token, "principal:alice", "confirm_delete", args, issued.Add(time.Minute), ""},
		{"arguments differently encoded", token, "principal:alice", "confirm_delete", json.RawMessage(`{ "filename" : "a.txt" }`), issued, ""},
		{"appended bytes (as the suite tampers)", token + "-TAMPERED", "principal:alice", "confirm_delete", args, issued, "integrity check failed"},
		{"not base64", "%%%." + sig, "principal:alice", "confirm_delete", args, issued, "malformed"},
		{"altered answers", forged, "principal:alice", "confirm_delete", args, issued, "integrity check failed"},
		{"altered mac", flipped, "principal:alice", "confirm_delete", args, issued, "integrity check failed"},
		{"no mac", enc, "principal:alice", "confirm_delete", args, issued, "malformed"},
		{"another server run's key", otherToken, "principal:alice", "confirm_delete", args, issued, "integrity check failed"},
		{"another tool", token, "principal:alice", "greet", args, issued, `issued for the tool "confirm_delete", not "greet"`},
		{"other arguments", token, "principal:alice", "confirm_delete", json.RawMessage(`{"filename":"b.txt"}`), issued, "other arguments"},
		{"another caller", token, "principal:bob", "confirm_delete", args, issued, "another caller"},
		{"expired", token, "principal:alice", "confirm_delete", args, issued.Add(RequestStateMaxAge + time.Second), "expired"},
		{"issued in the future", token, "principal:alice", "confirm_delete", args, issued.Add(-time.Hour), "expired"},
		{"over the size limit", strings.Repeat("a", RequestStateMaxBytes+1), "principal:alice", "confirm_delete", args, issued, "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *codec
			c.now = func() time.Time { return tc.at }
			got, err := c.open(tc.token, tc.owner, tc.tool, tc.args)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if len(got) != 1 || string(got["confirm"]) != string(answers["confirm"]) {
					t.Errorf("answers %v; want %v", got, answers)
				}
				return
			}
			if err == nil || !errors.Is(err, errBadState) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("open: %v; want a refusal that says %q", err, tc.want)
			}
		})
	}
}

// TestRequestStateSealBounded: answers that would make a requestState over the limit are
// refused when sealing, saying so.
func TestRequestStateSealBounded(t *testing.T) {
	t.Parallel()
	codec, err := newStateCodec()
	if err != nil {
		t.Fatal(err)
	}
	big, _ := json.Marshal(map[string]string{"text": strings.Repeat("x", RequestStateMaxBytes)})
	_, err = codec.seal("principal:alice", "t", json.RawMessage(`{}`), map[string]json.RawMessage{"k": big})
	if err == nil || !strings.Contains(err.Error(), "over the") {
		t.Errorf("seal of %d bytes of answers: %v; want a refusal naming the limit", len(big), err)
	}
}
