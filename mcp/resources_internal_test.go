package mcp

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestWorkspacePath: a workspace URI is read back into a path inside the workspace, or
// refused with a message that says why.
func TestWorkspacePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uri, want string
		refusal   string // in the error; "" means accepted
	}{
		{uri: "sandbox://workspace/plot.png", want: "plot.png"},
		{uri: "sandbox://workspace/out/data%20set.csv", want: "out/data set.csv"},
		{uri: "sandbox://workspace/%C3%A9t%C3%A9.txt", want: "été.txt"},
		{uri: "sandbox://workspace/.config/x", want: ".config/x"},
		{uri: "sandbox://workspace/../etc/passwd", refusal: "leads outside the workspace"},
		{uri: "sandbox://workspace/a/../../etc/passwd", refusal: "leads outside the workspace"},
		{uri: "sandbox://workspace/%2E%2E/etc/passwd", refusal: "leads outside the workspace"},
		{uri: "sandbox://workspace/a%2F..%2F..%2Fetc", refusal: "encoded slash"},
		{uri: "sandbox://workspace/a%00b", refusal: "NUL"},
		{uri: "sandbox://workspace//etc/passwd", refusal: "empty"},
		{uri: "sandbox://workspace/./a", refusal: "empty or \".\""},
		{uri: "sandbox://workspace/", refusal: "names no file"},
		{uri: "sandbox://workspace/a?b", refusal: "no query or fragment"},
		{uri: "sandbox://workspace/%zz", refusal: "bad percent-encoding"},
		{uri: "file:///etc/passwd", refusal: "not a workspace URI"},
	} {
		got, err := workspacePath(tc.uri)
		switch {
		case tc.refusal == "" && (err != nil || got != tc.want):
			t.Errorf("%s: got %q, %v; want %q", tc.uri, got, err, tc.want)
		case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("%s: got %q, %v; want a refusal with %q", tc.uri, got, err, tc.refusal)
		}
	}
}

// TestWorkspaceURIRoundTrip: every name a file may have comes back from its URI unchanged.
func TestWorkspaceURIRoundTrip(t *testing.T) {
	t.Parallel()
	for _, rel := range []string{"a.txt", "dir/sub/b c.png", "50%.csv", "q?.txt", "h#1.md", "été/ü.txt", "..a", "a..", "-x"} {
		uri := workspaceURI(rel)
		got, err := workspacePath(uri)
		if err != nil || got != rel {
			t.Errorf("%q -> %s -> %q, %v", rel, uri, got, err)
		}
	}
}

// TestFileContents: text types come back as text, the rest as base64 blobs, typed by name
// or, without a known extension, by content.
func TestFileContents(t *testing.T) {
	t.Parallel()
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	for _, tc := range []struct {
		name     string
		data     []byte
		mime     string
		wantText bool
	}{
		{"plot.png", png, "image/png", false},
		{"noext", png, "image/png", false},
		{"notes.txt", []byte("hello\n"), "text/plain", true},
		{"data.csv", []byte("a,b\n1,2\n"), "text/csv", true},
		{"r.json", []byte(`{"a":1}`), "application/json", true},
		{"README", []byte("plain words"), "text/plain", true},
		{"blob", []byte{0, 1, 2, 0xff}, "application/octet-stream", false},
		{"bad.txt", []byte{0xff, 0xfe}, "text/plain", false}, // not UTF-8: a blob, type kept
	} {
		c := fileContents("sandbox://workspace/"+tc.name, tc.name, tc.data)
		switch v := c.(type) {
		case mcp.TextResourceContents:
			if !tc.wantText || v.MIMEType != tc.mime || v.Text != string(tc.data) {
				t.Errorf("%s: text %q of type %s; want text=%v type %s", tc.name, v.Text, v.MIMEType, tc.wantText, tc.mime)
			}
		case mcp.BlobResourceContents:
			data, _ := base64.StdEncoding.DecodeString(v.Blob)
			if tc.wantText || v.MIMEType != tc.mime || string(data) != string(tc.data) {
				t.Errorf("%s: blob of type %s; want text=%v type %s", tc.name, v.MIMEType, tc.wantText, tc.mime)
			}
		default:
			t.Errorf("%s: contents %T", tc.name, c)
		}
	}
}
