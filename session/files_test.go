package session

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func TestEntryName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "a.txt", want: "a.txt"},
		{in: "dir/", want: "dir"},
		{in: "./dir/f", want: "dir/f"},
		{in: "./", want: ""},
		{in: ".", want: ""},
		{in: "a//b/./c", want: "a/b/c"},
		{in: "..", bad: true},
		{in: "../x", bad: true},
		{in: "a/../../x", bad: true},
		{in: "a/..", bad: true}, // harmless after cleaning, refused anyway: no ".." at all
		{in: "/etc/passwd", bad: true},
		{in: "a\x00b", bad: true},
		{in: "..foo/bar..", want: "..foo/bar.."},
	} {
		got, err := entryName(tc.in)
		if tc.bad {
			if !errors.Is(err, api.ErrInvalidArchive) {
				t.Errorf("entryName(%q) = %q, %v; want api.ErrInvalidArchive", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("entryName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestReadArchiveLimits(t *testing.T) {
	t.Parallel()
	build := func(n int, size int) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for i := range n {
			_ = tw.WriteHeader(&tar.Header{Name: strings.Repeat("f", i+1), Typeflag: tar.TypeReg, Mode: 0o640, Size: int64(size)})
			_, _ = tw.Write(bytes.Repeat([]byte{'x'}, size))
		}
		_ = tw.Close()
		return buf.Bytes()
	}
	entries, err := readArchive(bytes.NewReader(build(2, 10)), 1<<20, 10)
	if err != nil || len(entries) != 2 || entries[0].mode != 0o640 || string(entries[1].data) != "xxxxxxxxxx" {
		t.Fatalf("readArchive = %+v, %v", entries, err)
	}
	if _, err := readArchive(bytes.NewReader(build(1, 4096)), 1024, 10); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("over the byte limit: %v", err)
	}
	if _, err := readArchive(bytes.NewReader(build(3, 1)), 1<<20, 2); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("over the entry limit: %v", err)
	}
	if _, err := readArchive(strings.NewReader("not a tar at all, not at all, not at all"), 1<<20, 10); !errors.Is(err, api.ErrInvalidArchive) {
		t.Errorf("garbage: %v", err)
	}
	if entries, err := readArchive(bytes.NewReader(nil), 1<<20, 10); err != nil || len(entries) != 0 {
		t.Errorf("empty body = %v, %v; want no entries", entries, err)
	}
}

func TestTarDirIsShapedLikeMsEnclaves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("echo"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := api.TarDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	entries, err := readArchive(&buf, 1<<20, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].name != "sub" || !entries[0].dir || entries[0].mode != 0o750 ||
		entries[1].name != "sub/run.sh" || entries[1].mode != 0o755 {
		t.Errorf("entries = %+v", entries)
	}

	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := api.TarDir(dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "link") {
		t.Errorf("a symlink in the tree: %v, want an error naming it", err)
	}
}

func TestLsPerm(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]uint32{
		"-rw-r--r--": 0o644, "drwxr-x---": 0o750, "-rwsr-xr-x": 0o755, "-rwSr--r--": 0o644, "drwxrwxrwt": 0o777, "?": 0o644,
	} {
		if got := lsPerm(in); got != want {
			t.Errorf("lsPerm(%q) = %o, want %o", in, got, want)
		}
	}
}

// mergeConfig is what lets ms-enclave's full default body keep the operator's defaults.
func TestMergeConfig(t *testing.T) {
	t.Parallel()
	defaults := sandbox.Config{
		Image: "enclave/python:bookworm", MemoryLimit: "1g", PidsLimit: 128,
		EnvVars:     map[string]string{"PYTHONHASHSEED": "0"},
		ToolsConfig: sandbox.ToolsConfig{"shell_executor": {"shell": "/bin/bash"}},
	}
	got := mergeConfig(defaults, sandbox.Config{
		MemoryLimit: "4g", NetworkEnabled: true, EnvVars: map[string]string{}, ToolsConfig: sandbox.ToolsConfig{},
	})
	if got.Image != defaults.Image || got.MemoryLimit != "4g" || got.PidsLimit != 128 || !got.NetworkEnabled ||
		got.EnvVars["PYTHONHASHSEED"] != "0" || got.ToolsConfig["shell_executor"]["shell"] != "/bin/bash" {
		t.Errorf("merged = %+v", got)
	}
}

// Finding 7 (issue 9): a symlink in a downloaded tree keeps a target only when following it
// stays inside the tree; the target is rewritten as the shortest relative path.
func TestLinkTarget(t *testing.T) {
	t.Parallel()
	kinds := map[string]entryKind{
		"sub": kindDir, "sub/f": kindFile, "sub/up": kindSymlink, "sub/deep": kindDir, "lib": kindDir, "jump": kindSymlink,
	}
	for _, tc := range []struct {
		rel, target string
		want        string // "" means left out
	}{
		{"lib64", "lib", "lib"},
		{"sub/deep/l", "../f", "../f"},
		{"sub/deep/l", "../../lib/./x", "../../lib/x"},
		{"sub/l", "/sandbox/out/lib", "../lib"}, // absolute inside the root: made relative
		{"l", "/sandbox/out", "."},              // the root itself
		{"sub/up", "..", ".."},                  // one level up, still the root
		{"l", "/etc/passwd", ""},                // absolute outside
		{"l", "/sandbox/outside", ""},           // a sibling sharing the root's prefix
		{"l", "..", ""},                         // above the root
		{"sub/l", "../../etc", ""},              // above the root from deeper
		{"sub/l", "up/..", ""},                  // through another symlink
		{"l", "jump/x", ""},                     // through another symlink
		{"l", "jump", "jump"},                   // to another symlink, checked on its own
		{"l", "sub/../sub/f", "sub/f"},          // climbs, but only through real directories
		{"l", "sub\\..\\..\\x", ""},             // a Windows path
		{"l", "", ""},
	} {
		got, ok := linkTarget("/sandbox/out", tc.rel, tc.target, kinds)
		if !ok {
			got = ""
		}
		if got != tc.want {
			t.Errorf("linkTarget(%s -> %s) = %q, %v; want %q", tc.rel, tc.target, got, ok, tc.want)
		}
	}
}

func TestDownloadName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"/sandbox/a.txt": "a.txt", "/": "download", "..": "download", "/x/a\\b": "download", "rel/b": "b"} {
		if got := downloadName(in); got != want {
			t.Errorf("downloadName(%q) = %q, want %q", in, got, want)
		}
	}
}
