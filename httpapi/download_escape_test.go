package httpapi_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// tarEntryRead is one entry of a downloaded tar.
type tarEntryRead struct {
	typ  byte
	link string
	body string
}

// readTar parses a downloaded tar whole, failing the test on a corrupt one.
func readTar(t *testing.T, body []byte) map[string]tarEntryRead {
	t.Helper()
	out := map[string]tarEntryRead{}
	tr := tar.NewReader(bytes.NewReader(body))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading the tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		out[hdr.Name] = tarEntryRead{typ: hdr.Typeflag, link: hdr.Linkname, body: string(data)}
	}
}

// assertConfined fails the test for any entry of a downloaded tar that could put something
// outside the directory it is extracted into: a name that is absolute, unclean or holds
// "..", an entry below a symlink, or a symlink whose target, followed through the tar's own
// symlinks, leaves the tree.
func assertConfined(t *testing.T, entries map[string]tarEntryRead) {
	t.Helper()
	for name, e := range entries {
		clean := strings.TrimSuffix(name, "/")
		if path.IsAbs(name) || path.Clean(clean) != clean || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(name, "\\") {
			t.Errorf("tar entry %q escapes the root", name)
		}
		for dir := path.Dir(clean); dir != "."; dir = path.Dir(dir) {
			if entries[dir].typ == tar.TypeSymlink {
				t.Errorf("tar entry %q lies below the symlink %s", name, dir)
			}
		}
		if e.typ == tar.TypeSymlink {
			if where, ok := follow(entries, path.Dir(clean), e.link, 0); !ok {
				t.Errorf("symlink %s -> %s leads to %s, outside the root", name, e.link, where)
			}
		}
	}
}

// follow resolves target from dir (both relative to the root) through the tar's symlinks,
// the way an extractor's file system would; ok is false when it leaves the root.
func follow(entries map[string]tarEntryRead, dir, target string, depth int) (string, bool) {
	if path.IsAbs(target) || depth > 40 {
		return target, false
	}
	var at []string
	if dir != "." {
		at = strings.Split(dir, "/")
	}
	for _, step := range strings.Split(target, "/") {
		switch step {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return "../" + target, false
			}
			at = at[:len(at)-1]
			continue
		}
		at = append(at, step)
		cur := strings.Join(at, "/")
		if e := entries[cur]; e.typ == tar.TypeSymlink {
			where, ok := follow(entries, path.Dir(cur), e.link, depth+1)
			if !ok {
				return where, false
			}
			at = strings.Split(where, "/")
			if where == "." {
				at = nil
			}
		}
	}
	if len(at) == 0 {
		return ".", true
	}
	return strings.Join(at, "/"), true
}

// Finding 7 (issue 9): a real sandbox plants symlinks to absolute paths (a file, a
// directory), up out of the tree, and through another symlink; the downloaded tar holds none
// that leads outside, and keeps those that stay inside, rewritten relative.
func TestDownloadTarSymlinksStayInsideRoot(t *testing.T) {
	t.Parallel()
	s := newEngineServer(t, nil)
	id := s.create(map[string]any{})
	res := s.execute(id, "shell_executor", map[string]any{"command": "set -e; mkdir -p out/sub/deep; echo hi > out/sub/f.txt; cd out; " +
		"ln -s /etc/passwd abs; ln -s /etc etcdir; ln -s ../../.. up3; ln -s /sandbox/outside sibling; " +
		"ln -s sub/f.txt inner; ln -s /sandbox/out/sub absinner; ln -s .. sub/up; ln -s sub/up/.. via; ln -s ../f.txt sub/deep/f"})
	if res.Status != "success" {
		t.Fatalf("planting links: %s %s", res.Status, res.Error)
	}
	r := s.do(http.MethodGet, "/sandbox/"+id+"/files?path=out", nil)
	if r.status != http.StatusOK {
		t.Fatalf("download = %d %s", r.status, r.body)
	}
	entries := readTar(t, r.body)
	assertConfined(t, entries)
	want := map[string]tarEntryRead{
		"sub/":       {typ: tar.TypeDir},
		"sub/deep/":  {typ: tar.TypeDir},
		"sub/f.txt":  {typ: tar.TypeReg, body: "hi\n"},
		"sub/up":     {typ: tar.TypeSymlink, link: ".."},
		"sub/deep/f": {typ: tar.TypeSymlink, link: "../f.txt"},
		"inner":      {typ: tar.TypeSymlink, link: "sub/f.txt"},
		"absinner":   {typ: tar.TypeSymlink, link: "sub"},
	}
	if fmt.Sprint(entries) != fmt.Sprint(want) {
		t.Errorf("tar entries:\n%v\nwant (abs, etcdir, up3, sibling and via left out):\n%v", entries, want)
	}
	if bytes.Contains(r.body, []byte("root:x:0:0")) {
		t.Error("the tar carries /etc/passwd's content")
	}
}

// forgingSandbox is a real sandbox whose directory listings are rewritten by forge, as a
// sandbox that has taken over its agent could answer them.
type forgingSandbox struct {
	sandbox.Sandbox
	forge func(dir string, entries []sandbox.FileInfo) []sandbox.FileInfo
}

func (f *forgingSandbox) File(ctx context.Context, req sandbox.FileRequest) (sandbox.FileResult, error) {
	res, err := f.Sandbox.File(ctx, req)
	if err == nil && req.Action == sandbox.FileList {
		res.Entries = f.forge(req.Path, res.Entries)
	}
	return res, err
}

// Config keeps the real sandbox's resolved config visible to the API.
func (f *forgingSandbox) Config() sandbox.Resolved {
	return f.Sandbox.(interface{ Config() sandbox.Resolved }).Config()
}

// Finding 7: listings that lie about names, types or sizes cannot make the tar hold anything
// outside the requested directory, nor more file bytes than the download limit. A name no
// file can have fails the download; a directory that is a symlink is not walked.
func TestDownloadForgedListingCannotEscape(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t)
	const limit = 1 << 20
	file := func(name string, size int64) sandbox.FileInfo {
		return sandbox.FileInfo{Name: name, Mode: "-rw-r--r--", Size: size}
	}
	tests := []struct {
		name   string
		forge  func(dir string, entries []sandbox.FileInfo) []sandbox.FileInfo
		fails  string // a substring of the error; "" when the download succeeds
		absent []string
	}{
		{name: "../ name", fails: "not a file name", forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, file("../../../etc/passwd", 10))
		}},
		{name: "absolute name", fails: "not a file name", forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, file("/etc/passwd", 10))
		}},
		{name: "dot-dot", fails: "not a file name", forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, sandbox.FileInfo{Name: "..", Mode: "drwxr-xr-x", IsDir: true})
		}},
		{name: "symlink then directory of one name", fails: "twice", forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, sandbox.FileInfo{Name: "x", Mode: "lrwxrwxrwx", Link: "/etc"}, sandbox.FileInfo{Name: "x", Mode: "drwxr-xr-x", IsDir: true})
		}},
		{name: "directory that is a symlink outside", absent: []string{"etc", "etc/", "etc/passwd"},
			forge: func(dir string, es []sandbox.FileInfo) []sandbox.FileInfo {
				if path.Base(dir) != "out" {
					return es
				}
				return append(es, sandbox.FileInfo{Name: "etc", Mode: "drwxr-xr-x", IsDir: true, Link: "/etc"})
			}},
		{name: "symlink to / claimed a file", absent: []string{"root"}, forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, sandbox.FileInfo{Name: "root", Mode: "-rw-r--r--", Link: "/"})
		}},
		{name: "windows path", absent: []string{"..\\..\\evil"}, forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
			return append(es, file("..\\..\\evil", 1))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			creator := func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
				sb, err := sandbox.NewCreator(e, sandbox.TypeDocker)(ctx, owner, cfg)
				if err != nil {
					return nil, err
				}
				return &forgingSandbox{Sandbox: sb, forge: tc.forge}, nil
			}
			s := newServer(t, creator, func(c *httpapi.Config) { c.Limits.MaxDownloadBytes = limit })
			id := s.create(map[string]any{})
			if res := s.execute(id, "shell_executor", map[string]any{"command": "mkdir -p out/sub && echo a > out/a.txt"}); res.Status != "success" {
				t.Fatalf("setting up: %s", res.Error)
			}
			r := s.do(http.MethodGet, "/sandbox/"+id+"/files?path=out", nil)
			if tc.fails != "" {
				if r.status == http.StatusOK || !strings.Contains(r.detail(t), tc.fails) {
					t.Fatalf("download = %d %s, want an error mentioning %q", r.status, r.body, tc.fails)
				}
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("download = %d %s", r.status, r.body)
			}
			entries := readTar(t, r.body)
			assertConfined(t, entries)
			for _, name := range tc.absent {
				if _, ok := entries[name]; ok {
					t.Errorf("tar holds %q: %v", name, entries)
				}
			}
			if entries["a.txt"].body != "a\n" {
				t.Errorf("the real file is missing: %v", entries)
			}
		})
	}

	t.Run("sizes that lie", func(t *testing.T) {
		t.Parallel()
		creator := func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
			sb, err := sandbox.NewCreator(e, sandbox.TypeDocker)(ctx, owner, cfg)
			if err != nil {
				return nil, err
			}
			return &forgingSandbox{Sandbox: sb, forge: func(_ string, es []sandbox.FileInfo) []sandbox.FileInfo {
				for i := range es {
					es[i].Size = 1
				}
				return es
			}}, nil
		}
		s := newServer(t, creator, func(c *httpapi.Config) { c.Limits.MaxDownloadBytes = limit })
		id := s.create(map[string]any{})
		if res := s.execute(id, "shell_executor", map[string]any{"command": "mkdir big && for i in 1 2 3 4; do head -c 600000 /dev/zero > big/$i; done"}); res.Status != "success" {
			t.Fatalf("setting up: %s", res.Error)
		}
		status, body, readErr := rawGet(t, s, "/sandbox/"+id+"/files?path=big")
		if status == http.StatusOK && readErr == nil {
			t.Fatalf("2.4 MB under a %d-byte limit came back whole (%d bytes)", limit, len(body))
		}
		var got int
		tr := tar.NewReader(bytes.NewReader(body))
		for {
			if _, err := tr.Next(); err != nil {
				break
			}
			n, _ := io.Copy(io.Discard, tr)
			got += int(n)
		}
		if got > limit {
			t.Errorf("the tar carried %d bytes of files, over the %d-byte limit", got, limit)
		}
	})
}

// rawGet sends an authorised GET and reads what arrives, reporting a broken body instead of
// failing the test.
func rawGet(t *testing.T, s *server, p string) (int, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Upload side of finding 7: a sparse tar entry a few bytes long on the wire that expands to
// 1 GiB is refused by its extracted size, before anything is held or written.
func TestUploadSparseBombRefused(t *testing.T) {
	t.Parallel()
	s := newEngineServer(t, func(c *httpapi.Config) { c.Limits.MaxArchiveBytes = 1 << 20 })
	id := s.create(map[string]any{})
	bomb := sparseTar("bomb", 1<<30)
	if len(bomb) > 4096 {
		t.Fatalf("the bomb is %d bytes on the wire", len(bomb))
	}
	r := s.do(http.MethodPost, "/sandbox/"+id+"/archive?target_dir=up", bomb)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.detail(t), "limit") {
		t.Errorf("sparse bomb = %d %s, want 413", r.status, r.body)
	}
	if res := s.execute(id, "file_operation", map[string]any{"operation": "exists", "file_path": "up/bomb"}); res.Output != "does not exist" {
		t.Errorf("the refused archive wrote something: %s", res.Output)
	}
}

// sparseTar is a tar holding one PAX sparse (GNU 1.0) file of realSize bytes, all a hole:
// built by hand, since archive/tar writes no sparse files.
func sparseTar(name string, realSize int64) []byte {
	block := func(name string, typ byte, size int) []byte {
		b := make([]byte, 512)
		copy(b, name)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		return b
	}
	pad := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	record := func(k, v string) string { // "LEN key=value\n", LEN counting itself
		s := " " + k + "=" + v + "\n"
		n := len(s) + 1
		for len(fmt.Sprint(n))+len(s) != n {
			n++
		}
		return fmt.Sprint(n) + s
	}
	pax := record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0") + record("GNU.sparse.name", name) +
		record("GNU.sparse.realsize", fmt.Sprint(realSize))
	sparseMap := fmt.Sprintf("1\n%d\n0\n", realSize) // one data region of 0 bytes at the end
	var buf bytes.Buffer
	buf.Write(block("PaxHeaders/"+name, 'x', len(pax)))
	buf.Write(pad([]byte(pax)))
	buf.Write(block(name, '0', 512))
	buf.Write(pad([]byte(sparseMap)))
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}
