package schema

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// execTool is the tool whose exports are pinned by golden files.
func execTool() Tool {
	return Tool{
		Name:        "python_executor",
		Description: "Run Python code in a sandbox, and return its output.",
		Params:      &execParams{},
	}
}

// checkGolden compares got, indented, with testdata/name. With -update it
// rewrites the file; a missing file fails under CI and is written otherwise.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, got, "", "  "); err != nil {
		t.Fatalf("indenting output: %v", err)
	}
	buf.WriteByte('\n')
	path := filepath.Join("testdata", name)
	want, err := os.ReadFile(path)
	switch {
	case *update:
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatalf("updating golden file: %v", err)
		}
		return
	case os.IsNotExist(err) && os.Getenv("CI") == "":
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatalf("writing missing golden file: %v", err)
		}
		t.Logf("wrote missing golden file %s", path)
		return
	case err != nil:
		t.Fatalf("reading golden file (run go test ./schema -update to create it): %v", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("output differs from %s (run go test ./schema -update if intended)\ngot:\n%s\nwant:\n%s", path, buf.Bytes(), want)
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, f := range Formats() {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			got, err := Export(execTool(), f)
			if err != nil {
				t.Fatalf("Export(%s) error = %v", f, err)
			}
			checkGolden(t, "python_executor."+string(f)+".json", got)
		})
	}
}

func TestExportDeterministic(t *testing.T) {
	t.Parallel()
	for _, f := range Formats() {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			first, err := Export(execTool(), f)
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				again, err := Export(execTool(), f)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first, again) {
					t.Fatalf("output changed between runs:\n%s\n%s", first, again)
				}
			}
		})
	}
}

func TestExportMatchesFunctions(t *testing.T) {
	t.Parallel()
	funcs := map[Format]func(Tool) (json.RawMessage, error){
		FormatMCP:          MCP,
		FormatOpenAI:       OpenAI,
		FormatOpenAIStrict: OpenAIStrict,
	}
	for _, f := range Formats() {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			viaExport, err := Export(execTool(), f)
			if err != nil {
				t.Fatal(err)
			}
			direct, err := funcs[f](execTool())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(viaExport, direct) {
				t.Errorf("Export(%s) = %s, direct call = %s", f, viaExport, direct)
			}
		})
	}
}

func TestExportUnknownFormat(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{"", "yaml", "OpenAI", "openai_strict"} {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			_, err := Export(execTool(), f)
			want := `unknown schema format "` + string(f) + `"; valid: mcp, openai, openai-strict`
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Export(%q) error = %v, want it to contain %q", f, err, want)
			}
		})
	}
}

// envelope is the decoded OpenAI tool wrapper.
type envelope struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description *string         `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

func decodeEnvelope(t *testing.T, raw []byte) envelope {
	t.Helper()
	var e envelope
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decoding envelope %s: %v", raw, err)
	}
	return e
}

func TestOpenAIEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		export     func(Tool) (json.RawMessage, error)
		tool       Tool
		wantStrict bool
	}{
		{name: "plain", export: OpenAI, tool: execTool()},
		{name: "strict", export: OpenAIStrict, tool: execTool(), wantStrict: true},
		{name: "plain without description", export: OpenAI, tool: Tool{Name: "noop", Params: &emptyParams{}}},
		{name: "strict without description", export: OpenAIStrict, tool: Tool{Name: "noop", Params: &emptyParams{}}, wantStrict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw, err := tt.export(tt.tool)
			if err != nil {
				t.Fatal(err)
			}
			e := decodeEnvelope(t, raw)
			if e.Type != "function" || e.Function.Name != tt.tool.Name {
				t.Errorf("type = %q, name = %q", e.Type, e.Function.Name)
			}
			if tt.tool.Description == "" && e.Function.Description != nil {
				t.Errorf("empty description is emitted as %q", *e.Function.Description)
			}
			if tt.tool.Description != "" && (e.Function.Description == nil || *e.Function.Description != tt.tool.Description) {
				t.Errorf("description = %v, want %q", e.Function.Description, tt.tool.Description)
			}
			if got := e.Function.Strict != nil && *e.Function.Strict; got != tt.wantStrict {
				t.Errorf("strict = %v, want %v", got, tt.wantStrict)
			}
			if !tt.wantStrict && e.Function.Strict != nil {
				t.Error("non-strict output carries a strict key")
			}
			if tt.wantStrict {
				if err := ValidateStrict(e.Function.Parameters); err != nil {
					t.Errorf("ValidateStrict(parameters) = %v", err)
				}
				return
			}
			mcp, err := MCP(tt.tool)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.Function.Parameters, mcp) {
				t.Errorf("plain parameters differ from the MCP schema:\n%s\n%s", e.Function.Parameters, mcp)
			}
		})
	}
}

func TestFunctionNameRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tool    string
		wantErr string
	}{
		{name: "ok", tool: "shell-executor_2"},
		{name: "empty", tool: "", wantErr: "must be 1 to 64 characters"},
		{name: "too long", tool: strings.Repeat("a", 65), wantErr: "must be 1 to 64 characters"},
		{name: "dot", tool: "files.read", wantErr: `character '.' is not a letter`},
		{name: "space", tool: "read file", wantErr: `character ' ' is not a letter`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, export := range []func(Tool) (json.RawMessage, error){OpenAI, OpenAIStrict} {
				_, err := export(Tool{Name: tt.tool, Params: &emptyParams{}})
				if tt.wantErr == "" {
					if err != nil {
						t.Errorf("error = %v", err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
				}
			}
		})
	}
}

func TestExportBadParams(t *testing.T) {
	t.Parallel()
	for _, f := range Formats() {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			_, err := Export(Tool{Name: "bad", Params: 7}, f)
			if err == nil || !strings.Contains(err.Error(), "reflecting int") || !strings.Contains(err.Error(), `"bad"`) {
				t.Errorf("error = %v, want one naming the tool and the params type", err)
			}
		})
	}
}
