package tools_test

import (
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestIntegrationMultiCode runs multi_code_executor in a default sandbox (the python image on
// Docker, the host on the process backend, which runs under -short): python and bash work,
// each call runs in a directory of its own that is gone afterwards, and on Docker a language
// whose toolchain the image lacks says which image has it.
func TestIntegrationMultiCode(t *testing.T) {
	for _, backend := range testenv.Backends() {
		t.Run(backend.Name, func(t *testing.T) {
			sb := testenv.Sandbox(t, backend.New(t), sandbox.Config{})
			steps := []struct {
				name, args string
				wantStatus tools.Status
				want       string // in the text (output, then error)
				docker     bool   // only where the image is known
			}{
				{"python hello", `{"language":"python","code":"print('hello, world')"}`, tools.StatusSuccess, "hello, world\n", false},
				{"python imports a file of the call", `{"language":"python","code":"from helper import greet\nprint(greet())","files":{"helper.py":"def greet():\n    return 'hi from a file'\n"}}`, tools.StatusSuccess, "hi from a file", false},
				{"the array form of files", `{"language":"bash","code":"cat data/in.txt","files":[{"name":"data/in.txt","content":"from the array"}]}`, tools.StatusSuccess, "from the array", false},
				{"bash hello", `{"language":"bash","code":"echo \"hello, $((6*7))\""}`, tools.StatusSuccess, "hello, 42\n", false},
				{"the workspace is one level up", `{"language":"bash","code":"echo kept > ../kept.txt; pwd"}`, tools.StatusSuccess, "/.multi_code-", false},
				{"python syntax error", `{"language":"python","code":"print('x'"}`, tools.StatusError, "SyntaxError", false},
				{"run_timeout kills the program", `{"language":"python","code":"import time\ntime.sleep(30)","run_timeout":0.5}`, tools.StatusTimeout, "timed out after 0.5s", false},
				{"a compiler the image lacks", `{"language":"rust","code":"fn main() {}"}`, tools.StatusError, "language rust needs rustc (Debian package rustc), which this sandbox's image does not have; use the image " + sandbox.PolyglotImage, true},
				{"an interpreter the image lacks", `{"language":"ruby","code":"puts 1"}`, tools.StatusError, "language ruby needs ruby", true},
			}
			for _, st := range steps {
				t.Run(st.name, func(t *testing.T) {
					if st.docker && backend.Name != "docker" {
						t.Skip("the host may have any toolchain")
					}
					res := invoke(t, sb, nil, "multi_code_executor", st.args)
					if res.Status != st.wantStatus || !strings.Contains(res.Text(), st.want) {
						t.Fatalf("status %s, text %q; want %s with %q", res.Status, res.Text(), st.wantStatus, st.want)
					}
				})
			}
			t.Run("run directories are removed, the workspace kept", func(t *testing.T) {
				res := invoke(t, sb, nil, "file_operation", `{"operation":"list","file_path":"."}`)
				if strings.Contains(res.Output, ".multi_code-") || !strings.Contains(res.Output, "kept.txt") {
					t.Fatalf("workspace listing %q: want kept.txt and no run directory", res.Output)
				}
			})
		})
	}
}
