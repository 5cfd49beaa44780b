//go:build polyglot

package tools_test

// The slow suite behind `make test-polyglot`: every language of multi_code_executor, run over
// MCP by mark3labs/mcp-go's stdio client against the real enclave-mcp binary serving
// sandboxes of the polyglot image. It is not part of `make test`: the image is several GB and
// built only on request (enclave-mcp images build --image enclave/polyglot:bookworm).

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// brokenBuilds are programs each language refuses to build (for a language without a build
// step, to parse), with a piece of the message the toolchain gives.
var brokenBuilds = map[string]struct{ code, says string }{
	"python":        {"print(\"hello\"\n", "SyntaxError"},
	"pytest":        {"def test_hello(:\n    pass\n", "SyntaxError"},
	"bash":          {"if then fi\n", "syntax error"},
	"c":             {"int main(void) { return undeclared; }\n", "undeclared"},
	"cpp":           {"int main() { undeclared_function(); }\n", "was not declared"},
	"csharp":        {"class Program { static void Main() { int x = \"s\"; } }\n", "CS0029"},
	"go":            {"package main\n\nfunc main() { x := 1 }\n", "declared but not used"},
	"go_test":       {"package main\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) { undefinedFunction() }\n", "undefined: undefinedFunction"},
	"java":          {"public class Main { public static void main(String[] a) { String s = 1; } }\n", "incompatible types"},
	"junit":         {"import org.junit.Test;\n\npublic class HelloTest { @Test public void t() { undefinedMethod(); } }\n", "cannot find symbol"},
	"nodejs":        {"console.log(\"hello\";\n", "SyntaxError"},
	"ts":            {"const n: number = \"not a number\";\n", "TS2322"},
	"jest":          {"const n: number = \"not a number\";\ntest(\"x\", () => {});\n", "TS2322"},
	"rust":          {"fn main() { let x: i32 = \"s\"; }\n", "mismatched types"},
	"php":           {"<?php\necho \"hello\"\n", "Parse error"},
	"ruby":          {"puts(\"hello\"\n", "syntax error"},
	"perl":          {"print \"hello\n", "Can't find string terminator"},
	"lua":           {"print(\"hello\"\n", "expected"},
	"r":             {"cat(\"hello\"\n", "unexpected end of input"},
	"d_ut":          {"void main() { int x = \"s\"; }\n", "cannot implicitly convert"},
	"scala":         {"object Main { def main(args: Array[String]): Unit = { val x: Int = \"s\" } }\n", "type mismatch"},
	"kotlin_script": {"val x: Int = \"s\"\n", "type mismatch"},
	"verilog":       {"module tb;\n  initial begin\n    undefined_task;\n  end\nendmodule\n", "error"},
	"racket":        {"#lang racket\n(displayln \"hello\"\n", "read-syntax"},
	"sql":           {"SELEC 1;\n", "syntax error"},
}

// helloSays is what a test runner's passing run prints instead of the program's greeting.
var helloSays = map[string]string{
	"pytest":  "1 passed",
	"go_test": "ok",
	"junit":   "OK (1 test)",
	"jest":    "1 passed", // jest reports on stderr
	"d_ut":    "1 modules passed unittests",
}

// polyglotResult is a tool result's structuredContent.
type polyglotResult struct {
	Status   string         `json:"status"`
	Output   string         `json:"output"`
	Error    string         `json:"error"`
	Metadata map[string]any `json:"metadata"`
}

func TestIntegrationPolyglotOverMCP(t *testing.T) {
	testenv.RequireImage(t, testenv.Engine(t), sandbox.PolyglotImage)
	c := polyglotClient(t)
	for _, lang := range tools.Languages() {
		t.Run(lang.Name, func(t *testing.T) {
			broken, ok := brokenBuilds[lang.Name]
			if !ok {
				t.Fatalf("no broken program for %s: add one", lang.Name)
			}
			t.Run("hello", func(t *testing.T) {
				res := callCode(t, c, lang.Name, lang.Hello)
				want := helloSays[lang.Name]
				if want == "" {
					want = "hello, world\n"
				}
				if res.Status != "success" || !strings.Contains(res.Output+res.Error, want) {
					t.Fatalf("status %s, output %q, error %q; want success saying %q", res.Status, res.Output, res.Error, want)
				}
				t.Logf("compile %vs, run %vs", res.Metadata["compile_time"], res.Metadata["run_time"])
			})
			t.Run("broken", func(t *testing.T) {
				res := callCode(t, c, lang.Name, broken.code)
				// A compiler's messages are the error; a test runner or an interpreter may
				// report on stdout.
				says := res.Error
				if !lang.Compiled() {
					says = res.Output + res.Error
				}
				if res.Status != "error" || !strings.Contains(says, broken.says) {
					t.Fatalf("status %s, output %q, error %q; want error saying %q", res.Status, res.Output, res.Error, broken.says)
				}
				t.Logf("error %.300q", res.Error)
				if lang.Compiled() && res.Metadata["phase"] != "compile" {
					t.Errorf("metadata %v: want phase compile", res.Metadata)
				}
			})
		})
	}
}

// polyglotClient starts `enclave-mcp serve` on the polyglot image and connects mcp-go's stdio
// client to it; both end with the test.
func polyglotClient(t *testing.T) *mcpclient.Client {
	t.Helper()
	args := []string{"serve", "--image", sandbox.PolyglotImage}
	if rt := testenv.Runtime(); rt != "" {
		args = append(args, "--runtime", rt)
	}
	stderr := &syncbuf.Buffer{}
	c, err := mcpclient.NewStdioMCPClientWithOptions(testenv.Binary(t), nil, args, transport.WithCommandStderrWriter(stderr))
	if err != nil {
		t.Fatalf("starting enclave-mcp serve: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		if t.Failed() {
			t.Logf("server stderr:\n%s", stderr.String())
		}
	})
	testenv.InitializeMCP(t, c)
	return c
}

// callCode calls multi_code_executor and decodes its structured result.
func callCode(t *testing.T, c *mcpclient.Client, language, code string) polyglotResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var req mcpgo.CallToolRequest
	req.Params.Name = "multi_code_executor"
	req.Params.Arguments = map[string]any{"language": language, "code": code}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("tools/call: %v", err)
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var out polyglotResult
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("structuredContent %s: %v", raw, err)
	}
	if res.IsError != (out.Status != "success") {
		t.Errorf("isError %v with status %s", res.IsError, out.Status)
	}
	return out
}
