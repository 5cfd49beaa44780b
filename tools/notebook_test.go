package tools

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// fakeKernel is a notebook sandbox that answers with a canned result.
type fakeKernel struct {
	sandbox.Sandbox // nil: only the methods below may be called
	result          notebook.Result
	err             error
	gotCode         string
	gotOpts         notebook.ExecOptions
	restarted       bool
	interrupted     bool
}

func (f *fakeKernel) Info() sandbox.Info {
	return sandbox.Info{Type: sandbox.TypeNotebook, Metadata: map[string]any{"memory_limit": "1g"}}
}

func (f *fakeKernel) Execute(_ context.Context, code string, opts notebook.ExecOptions) (notebook.Result, error) {
	f.gotCode, f.gotOpts = code, opts
	return f.result, f.err
}

func (f *fakeKernel) Interrupt(context.Context) error { f.interrupted = true; return f.err }
func (f *fakeKernel) Restart(context.Context) error   { f.restarted = true; return f.err }

// plainSandbox is a docker sandbox as far as the notebook tools can tell.
type plainSandbox struct{ sandbox.Sandbox }

func (plainSandbox) Info() sandbox.Info { return sandbox.Info{Type: sandbox.TypeDocker} }

func pngOf(t *testing.T, w, h int, noisy bool) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x), uint8(y), 128, 255}
			if noisy {
				c = color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestNotebookExecutor(t *testing.T) {
	t.Parallel()
	small := pngOf(t, 64, 48, false)
	tests := []struct {
		name       string
		cell       notebook.Result
		err        error
		args       string
		wantStatus Status
		wantOutput string
		errorHas   []string
		check      func(t *testing.T, r Result, f *fakeKernel)
	}{
		{
			name: "value and stdout", args: `{"code":"print(1)\n2"}`,
			cell:       notebook.Result{Status: "ok", Output: "1\n2", Value: "2", ExecutionCount: 4},
			wantStatus: StatusSuccess, wantOutput: "1\n2",
			check: func(t *testing.T, r Result, f *fakeKernel) {
				if r.Metadata["result"] != "2" || r.Metadata["execution_count"] != 4 || r.Error != "" {
					t.Errorf("metadata %v error %q", r.Metadata, r.Error)
				}
				if f.gotOpts.Timeout != 30*time.Second || f.gotCode != "print(1)\n2" {
					t.Errorf("default timeout not applied: %v", f.gotOpts.Timeout)
				}
			},
		},
		{
			name: "exception", args: `{"code":"1/0"}`,
			cell:       notebook.Result{Status: "error", Stderr: "warned\n", Error: &notebook.CellError{Name: "ZeroDivisionError", Value: "division by zero", Traceback: []string{"Cell In[1], line 1", "ZeroDivisionError: division by zero"}}},
			wantStatus: StatusError, errorHas: []string{"warned\nCell In[1]", "ZeroDivisionError: division by zero"},
			check: func(t *testing.T, r Result, _ *fakeKernel) {
				if r.Metadata["ename"] != "ZeroDivisionError" {
					t.Errorf("metadata %v", r.Metadata)
				}
			},
		},
		{
			name: "timeout keeps state", args: `{"code":"sleep","timeout":0.5}`,
			cell:       notebook.Result{TimedOut: true, Output: "partial\n"},
			wantStatus: StatusTimeout, wantOutput: "partial\n", errorHas: []string{"timed out after 0.5s", "kept"},
			check: func(t *testing.T, _ Result, f *fakeKernel) {
				if f.gotOpts.Timeout != 500*time.Millisecond {
					t.Errorf("timeout = %v", f.gotOpts.Timeout)
				}
			},
		},
		{name: "cancelled", args: `{"code":"x"}`, cell: notebook.Result{Cancelled: true}, wantStatus: StatusCancelled, errorHas: []string{"cancelled"}},
		{name: "kernel died", args: `{"code":"x"}`, cell: notebook.Result{KernelDied: true}, wantStatus: StatusError, errorHas: []string{"kernel died", "limit is 1g", "fresh kernel"}},
		{name: "state lost is said", args: `{"code":"x"}`, cell: notebook.Result{Status: "ok", StateLost: "the kernel died"}, wantStatus: StatusSuccess, errorHas: []string{"[state lost: the kernel died"}},
		{name: "truncated", args: `{"code":"x"}`, cell: notebook.Result{Status: "ok", Truncated: true, OmittedBytes: 99}, wantStatus: StatusSuccess, errorHas: []string{"99 bytes omitted"}},
		{name: "aborted", args: `{"code":"x"}`, cell: notebook.Result{Status: "aborted"}, wantStatus: StatusError, errorHas: []string{"aborted"}},
		{
			name: "images pass through", args: `{"code":"plot"}`,
			cell:       notebook.Result{Status: "ok", Images: []notebook.Image{{MIMEType: "image/png", Data: small}}},
			wantStatus: StatusSuccess,
			check: func(t *testing.T, r Result, _ *fakeKernel) {
				if len(r.Images) != 1 || r.Images[0].Width != 64 || r.Images[0].Height != 48 || !bytes.Equal(r.Images[0].Data, small) {
					t.Errorf("images %+v", r.Images)
				}
				raw, _ := json.Marshal(r)
				if bytes.Contains(raw, []byte(`"data"`)) || !bytes.Contains(raw, []byte(`"mime_type":"image/png"`)) {
					t.Errorf("structured results list images without their bytes: %s", raw)
				}
			},
		},
		{name: "server gone", args: `{"code":"x"}`, err: fmt.Errorf("x: %w", notebook.ErrServerGone), wantStatus: StatusError, errorHas: []string{"fresh notebook sandbox"}},
		{name: "connection lost", args: `{"code":"x"}`, err: fmt.Errorf("x: %w", notebook.ErrConnectionLost), wantStatus: StatusError, errorHas: []string{"reconnects"}},
		{name: "empty code", args: `{"code":"  "}`, wantStatus: StatusError, errorHas: []string{"No code provided"}},
		{
			name: "output cap option", args: `{"code":"x"}`, cell: notebook.Result{Status: "ok"}, wantStatus: StatusSuccess,
			check: func(t *testing.T, _ Result, f *fakeKernel) {
				if f.gotOpts.MaxOutputBytes != 1000 {
					t.Errorf("max_output_bytes option not passed: %d", f.gotOpts.MaxOutputBytes)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeKernel{result: tc.cell, err: tc.err}
			r, err := notebookExecutor().Invoke(t.Context(), Call{Sandbox: f, DefaultTimeout: 30, Options: map[string]any{"max_output_bytes": float64(1000)}}, json.RawMessage(tc.args))
			if err != nil {
				t.Fatalf("invoke: %v", err)
			}
			if r.Status != tc.wantStatus || r.Output != tc.wantOutput {
				t.Errorf("status %s output %q, want %s %q (error %q)", r.Status, r.Output, tc.wantStatus, tc.wantOutput, r.Error)
			}
			for _, s := range tc.errorHas {
				if !strings.Contains(r.Error, s) {
					t.Errorf("error %q lacks %q", r.Error, s)
				}
			}
			if tc.check != nil {
				tc.check(t, r, f)
			}
		})
	}
}

func TestNotebookControlTools(t *testing.T) {
	t.Parallel()
	f := &fakeKernel{}
	if r, err := notebookRestart().Invoke(t.Context(), Call{Sandbox: f}, nil); err != nil || r.Status != StatusSuccess || !f.restarted {
		t.Errorf("restart: %+v %v", r, err)
	}
	if r, err := notebookInterrupt().Invoke(t.Context(), Call{Sandbox: f}, json.RawMessage(`{}`)); err != nil || r.Status != StatusSuccess || !f.interrupted {
		t.Errorf("interrupt: %+v %v", r, err)
	}
	if _, err := notebookRestart().Bind(json.RawMessage(`{"force":true}`)); !errors.Is(err, ErrInvalidArgs) {
		t.Errorf("unknown parameters must be refused: %v", err)
	}
	for _, def := range []Def{notebookExecutor(), notebookRestart(), notebookInterrupt()} {
		args := `{}`
		if def.Name == "notebook_executor" {
			args = `{"code":"1"}`
		}
		r, err := def.Invoke(t.Context(), Call{Sandbox: plainSandbox{}}, json.RawMessage(args))
		if err != nil || r.Status != StatusError || !strings.Contains(r.Error, "needs a docker_notebook sandbox, and this one is docker") {
			t.Errorf("%s in a docker sandbox: %+v %v", def.Name, r, err)
		}
	}
}

func TestFitImages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		images    []notebook.Image
		wantCount int
		noteHas   string
		maxSide   int
	}{
		{"small image as is", []notebook.Image{{MIMEType: "image/png", Data: pngOf(t, 100, 80, false)}}, 1, "", 100},
		{"too wide is downscaled", []notebook.Image{{MIMEType: "image/png", Data: pngOf(t, 3000, 100, false)}}, 1, "downscaled from 3000x100", maxImageSide},
		{"too heavy is downscaled", []notebook.Image{{MIMEType: "image/png", Data: pngOf(t, 800, 800, true)}}, 1, "downscaled from 800x800", 800},
		{"unknown small data passes", []notebook.Image{{MIMEType: "image/webp", Data: []byte("RIFF....WEBP")}}, 1, "", 0},
		{"unknown large data is refused", []notebook.Image{{MIMEType: "image/webp", Data: make([]byte, maxImageSize+1)}}, 0, "cannot be resized", 0},
		{"a decompression bomb is refused undecoded", []notebook.Image{{MIMEType: "image/png", Data: pngHeaderOnly(7000, 7000)}}, 0, "7000x7000 pixels is too large to resize", 0},
		{"too many bytes in all", slices.Repeat([]notebook.Image{{MIMEType: "image/png", Data: pngOf(t, 500, 500, true)}}, 6), 4, "image 5 and after: left out", 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, notes := fitImages(tc.images)
			if len(got) != tc.wantCount {
				t.Fatalf("%d images, want %d; notes %q", len(got), tc.wantCount, notes)
			}
			if tc.noteHas != "" && !strings.Contains(strings.Join(notes, "\n"), tc.noteHas) {
				t.Errorf("notes %q lack %q", notes, tc.noteHas)
			}
			total := 0
			for _, img := range got {
				total += img.Size
				if img.Size > maxImageSize || max(img.Width, img.Height) > max(tc.maxSide, 0) {
					t.Errorf("image %dx%d of %d bytes is over the limits", img.Width, img.Height, img.Size)
				}
				if img.MIMEType == "image/png" {
					if _, err := png.Decode(bytes.NewReader(img.Data)); err != nil {
						t.Errorf("not a PNG: %v", err)
					}
				}
			}
			if total > maxImagesSize {
				t.Errorf("%d bytes of images in all", total)
			}
		})
	}
}

// pngHeaderOnly is the start of a PNG that claims width x height pixels: signature and IHDR,
// a few dozen bytes, which image.DecodeConfig reads and image.Decode would try to fill.
func pngHeaderOnly(width, height uint32) []byte {
	ihdr := make([]byte, 0, 13)
	ihdr = binary.BigEndian.AppendUint32(ihdr, width)
	ihdr = binary.BigEndian.AppendUint32(ihdr, height)
	ihdr = append(ihdr, 16, 6, 0, 0, 0) // 16-bit RGBA: 8 bytes a pixel once decoded
	chunk := append([]byte("IHDR"), ihdr...)
	out := []byte("\x89PNG\r\n\x1a\n")
	out = binary.BigEndian.AppendUint32(out, uint32(len(ihdr)))
	out = append(out, chunk...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(chunk))
}

func TestDownscaleAverages(t *testing.T) {
	t.Parallel()
	// A one-pixel black line on white survives a 4x shrink as grey, not as nothing.
	src := image.NewRGBA(image.Rect(0, 0, 40, 40))
	for i := range src.Pix {
		src.Pix[i] = 255
	}
	for x := range 40 {
		src.SetRGBA(x, 21, color.RGBA{0, 0, 0, 255})
	}
	dst := downscale(src, 0.25)
	if b := dst.Bounds(); b.Dx() != 10 || b.Dy() != 10 {
		t.Fatalf("bounds %v", b)
	}
	if c := dst.RGBAAt(5, 5); c.R != 191 {
		t.Errorf("the line's row averages to %v, want grey 191", c)
	}
}
