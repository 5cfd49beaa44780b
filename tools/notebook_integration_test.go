package tools_test

import (
	"bytes"
	"context"
	"image/png"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestIntegrationNotebookTools runs the notebook tools, in order, against one real kernel.
func TestIntegrationNotebookTools(t *testing.T) {
	e := testenv.Engine(t)
	testenv.RequireImage(t, e, sandbox.DefaultNotebookImage)
	cfg, err := sandbox.Resolve(sandbox.Config{Image: sandbox.DefaultNotebookImage}, sandbox.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := notebook.Start(t.Context(), e, t.Name(), cfg, notebook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})

	steps := []struct {
		name, tool, args string
		wantStatus       tools.Status
		wantOutput       string // exact
		errorHas         string
	}{
		{"define", "notebook_executor", `{"code":"a=1; b=2; c=a+b; print(c)"}`, tools.StatusSuccess, "3\n", ""},
		{"reuse", "notebook_executor", `{"code":"print(c)"}`, tools.StatusSuccess, "3\n", ""},
		{"assign", "notebook_executor", `{"code":"x = 41"}`, tools.StatusSuccess, "", ""},
		{"value", "notebook_executor", `{"code":"x + 1"}`, tools.StatusSuccess, "42", ""},
		{"exception", "notebook_executor", `{"code":"1/0"}`, tools.StatusError, "", "ZeroDivisionError: division by zero"},
		{"streams apart", "notebook_executor", `{"code":"import sys; print('o'); print('e', file=sys.stderr)"}`, tools.StatusSuccess, "o\n", "e\n"},
		{"timeout keeps state", "notebook_executor", `{"code":"import time; time.sleep(5); y = 1","timeout":1}`, tools.StatusTimeout, "", "timed out after 1s"},
		{"y is absent, c kept", "notebook_executor", `{"code":"print('y' in globals(), c)"}`, tools.StatusSuccess, "False 3\n", ""},
		{"interrupt with nothing running", "notebook_interrupt", `{}`, tools.StatusSuccess, "", ""},
		{"restart", "notebook_restart", `{}`, tools.StatusSuccess, "", ""},
		{"state cleared", "notebook_executor", `{"code":"print('c' in globals())"}`, tools.StatusSuccess, "False\n", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := invoke(t, sb, nil, st.tool, st.args)
			if res.Status != st.wantStatus {
				t.Fatalf("status %s, want %s: output %q error %q", res.Status, st.wantStatus, res.Output, res.Error)
			}
			if st.tool == "notebook_executor" && res.Output != st.wantOutput {
				t.Errorf("output %q, want %q", res.Output, st.wantOutput)
			}
			if !strings.Contains(res.Error, st.errorHas) {
				t.Errorf("error %q lacks %q", res.Error, st.errorHas)
			}
			if strings.Contains(res.Error, "\x1b") {
				t.Errorf("ANSI codes in %q", res.Error)
			}
		})
	}

	t.Run("plot", func(t *testing.T) {
		res := invoke(t, sb, nil, "notebook_executor", `{"code":"import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('t')\nplt.show()"}`)
		if res.Status != tools.StatusSuccess || len(res.Images) != 1 {
			t.Fatalf("want one image: %+v", res)
		}
		img := res.Images[0]
		if _, err := png.Decode(bytes.NewReader(img.Data)); err != nil || img.MIMEType != "image/png" || img.Width == 0 {
			t.Errorf("image %s %dx%d: %v", img.MIMEType, img.Width, img.Height, err)
		}
	})

	t.Run("a docker sandbox is not a notebook", func(t *testing.T) {
		res := invoke(t, sb.AgentSandbox, nil, "notebook_executor", `{"code":"1"}`)
		if res.Status != tools.StatusError || !strings.Contains(res.Error, "needs a docker_notebook sandbox") {
			t.Errorf("got %+v", res)
		}
	})
}
