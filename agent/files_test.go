package agent

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

func TestFileOperations(t *testing.T) {
	a := startAgent(t)
	ws := a.workspace
	binary := make([]byte, 256*3)
	for i := range binary {
		binary[i] = byte(i)
	}
	nasty := `it's "quoted" $(touch pwned) ` + "`touch pwned`; a\nnewline.txt"
	mustWrite := func(t *testing.T, name, content string) {
		t.Helper()
		path := filepath.Join(ws, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	content := func(t *testing.T, name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(ws, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	tests := []struct {
		name  string
		setup func(t *testing.T)
		file  wire.File
		code  wire.Code // empty: a result is expected
		check func(t *testing.T, res *wire.FileResult)
	}{
		{
			name: "write then read",
			file: wire.File{Action: wire.FileWrite, Path: "deep/new/dir/hello.txt", Data: []byte("hello")},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Path != filepath.Join(ws, "deep/new/dir/hello.txt") || res.Written != 5 {
					t.Errorf("result %+v", res)
				}
				if got := content(t, "deep/new/dir/hello.txt"); got != "hello" {
					t.Errorf("content %q", got)
				}
			},
		},
		{
			name:  "write truncates",
			setup: func(t *testing.T) { mustWrite(t, "trunc.txt", "a long old content") },
			file:  wire.File{Action: wire.FileWrite, Path: "trunc.txt", Data: []byte("new")},
			check: func(t *testing.T, _ *wire.FileResult) {
				if got := content(t, "trunc.txt"); got != "new" {
					t.Errorf("content %q", got)
				}
			},
		},
		{
			name:  "write appends",
			setup: func(t *testing.T) { mustWrite(t, "log.txt", "one\n") },
			file:  wire.File{Action: wire.FileWrite, Path: "log.txt", Data: []byte("two\n"), Append: true},
			check: func(t *testing.T, _ *wire.FileResult) {
				if got := content(t, "log.txt"); got != "one\ntwo\n" {
					t.Errorf("content %q", got)
				}
			},
		},
		{
			name: "write with mode",
			file: wire.File{Action: wire.FileWrite, Path: "run.sh", Data: []byte("#!/bin/sh\n"), Mode: 0o700},
			check: func(t *testing.T, _ *wire.FileResult) {
				info, err := os.Stat(filepath.Join(ws, "run.sh"))
				if err != nil || info.Mode().Perm() != 0o700 {
					t.Errorf("mode %v, err %v", info.Mode(), err)
				}
			},
		},
		{
			name: "write a nasty name",
			file: wire.File{Action: wire.FileWrite, Path: nasty, Data: []byte("x")},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Path != filepath.Join(ws, nasty) || content(t, nasty) != "x" {
					t.Errorf("result %+v", res)
				}
			},
		},
		{
			name:  "read a nasty name",
			setup: func(t *testing.T) { mustWrite(t, nasty+"2", "nasty") },
			file:  wire.File{Action: wire.FileRead, Path: nasty + "2"},
			check: func(t *testing.T, res *wire.FileResult) {
				if string(res.Data) != "nasty" {
					t.Errorf("data %q", res.Data)
				}
			},
		},
		{
			name: "binary round trip",
			file: wire.File{Action: wire.FileWrite, Path: "bin/data", Data: binary},
			check: func(t *testing.T, _ *wire.FileResult) {
				back := a.call(wire.Request{Op: wire.OpFile, File: &wire.File{Action: wire.FileRead, Path: "bin/data"}})
				if back.File == nil || !bytes.Equal(back.File.Data, binary) || back.File.Truncated {
					t.Errorf("read back %+v", back)
				}
			},
		},
		{
			name:  "read with a cap",
			setup: func(t *testing.T) { mustWrite(t, "big.txt", "0123456789") },
			file:  wire.File{Action: wire.FileRead, Path: "big.txt", MaxBytes: 4},
			check: func(t *testing.T, res *wire.FileResult) {
				if string(res.Data) != "0123" || !res.Truncated {
					t.Errorf("data %q truncated %v", res.Data, res.Truncated)
				}
			},
		},
		{
			name:  "read exactly the cap",
			setup: func(t *testing.T) { mustWrite(t, "four.txt", "four") },
			file:  wire.File{Action: wire.FileRead, Path: "four.txt", MaxBytes: 4},
			check: func(t *testing.T, res *wire.FileResult) {
				if string(res.Data) != "four" || res.Truncated {
					t.Errorf("data %q truncated %v", res.Data, res.Truncated)
				}
			},
		},
		{
			name:  "dot-dot is cleaned",
			setup: func(t *testing.T) { mustWrite(t, "up.txt", "up") },
			file:  wire.File{Action: wire.FileRead, Path: "sub/../sub2/../up.txt"},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Path != filepath.Join(ws, "up.txt") || string(res.Data) != "up" {
					t.Errorf("result %+v", res)
				}
			},
		},
		{
			name: "dot-dot leaves the workspace",
			file: wire.File{Action: wire.FileExists, Path: "../" + filepath.Base(ws)},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Path != ws || !res.Exists {
					t.Errorf("result %+v", res)
				}
			},
		},
		{
			name:  "absolute path",
			setup: func(t *testing.T) { mustWrite(t, "abs.txt", "abs") },
			file:  wire.File{Action: wire.FileRead, Path: filepath.Join(ws, "abs.txt")},
			check: func(t *testing.T, res *wire.FileResult) {
				if string(res.Data) != "abs" {
					t.Errorf("data %q", res.Data)
				}
			},
		},
		{name: "read missing", file: wire.File{Action: wire.FileRead, Path: "missing.txt"}, code: wire.CodeNotFound},
		{
			name:  "read a directory",
			setup: func(t *testing.T) { os.Mkdir(filepath.Join(ws, "adir"), 0o755) },
			file:  wire.File{Action: wire.FileRead, Path: "adir"},
			code:  wire.CodeIsDir,
		},
		{
			name:  "read a fifo does not hang",
			setup: func(t *testing.T) { syscall.Mkfifo(filepath.Join(ws, "fifo"), 0o644) },
			file:  wire.File{Action: wire.FileRead, Path: "fifo"},
			code:  wire.CodeInvalid,
		},
		{
			name:  "read through a file",
			setup: func(t *testing.T) { mustWrite(t, "plain", "") },
			file:  wire.File{Action: wire.FileRead, Path: "plain/child"},
			code:  wire.CodeNotDir,
		},
		{
			name: "create",
			file: wire.File{Action: wire.FileCreate, Path: "created/new.txt", Data: []byte("fresh")},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Written != 5 || content(t, "created/new.txt") != "fresh" {
					t.Errorf("result %+v", res)
				}
			},
		},
		{
			name:  "create on existing",
			setup: func(t *testing.T) { mustWrite(t, "exists.txt", "keep") },
			file:  wire.File{Action: wire.FileCreate, Path: "exists.txt", Data: []byte("clobber")},
			code:  wire.CodeExists,
			check: func(t *testing.T, _ *wire.FileResult) {
				if got := content(t, "exists.txt"); got != "keep" {
					t.Errorf("content %q", got)
				}
			},
		},
		{
			name:  "write onto a directory",
			setup: func(t *testing.T) { os.Mkdir(filepath.Join(ws, "wdir"), 0o755) },
			file:  wire.File{Action: wire.FileWrite, Path: "wdir", Data: []byte("x")},
			code:  wire.CodeIsDir,
		},
		{
			name:  "delete a file",
			setup: func(t *testing.T) { mustWrite(t, "doomed.txt", "") },
			file:  wire.File{Action: wire.FileDelete, Path: "doomed.txt"},
			check: func(t *testing.T, _ *wire.FileResult) {
				if _, err := os.Lstat(filepath.Join(ws, "doomed.txt")); err == nil {
					t.Error("still there")
				}
			},
		},
		{name: "delete missing", file: wire.File{Action: wire.FileDelete, Path: "never.txt"}, code: wire.CodeNotFound},
		{
			name:  "delete a non-empty directory",
			setup: func(t *testing.T) { mustWrite(t, "full/f.txt", "") },
			file:  wire.File{Action: wire.FileDelete, Path: "full"},
			code:  wire.CodeNotEmpty,
		},
		{
			name:  "delete recursively",
			setup: func(t *testing.T) { mustWrite(t, "tree/a/b/c.txt", "") },
			file:  wire.File{Action: wire.FileDelete, Path: "tree", Recursive: true},
			check: func(t *testing.T, _ *wire.FileResult) {
				if _, err := os.Lstat(filepath.Join(ws, "tree")); err == nil {
					t.Error("still there")
				}
			},
		},
		{
			name:  "delete an empty directory",
			setup: func(t *testing.T) { os.Mkdir(filepath.Join(ws, "empty"), 0o755) },
			file:  wire.File{Action: wire.FileDelete, Path: "empty"},
		},
		{
			name: "list",
			setup: func(t *testing.T) {
				mustWrite(t, "listme/b.txt", "bb")
				mustWrite(t, "listme/a.txt", "a")
				os.Mkdir(filepath.Join(ws, "listme/c"), 0o755)
				os.Symlink("a.txt", filepath.Join(ws, "listme/d"))
			},
			file: wire.File{Action: wire.FileList, Path: "listme"},
			check: func(t *testing.T, res *wire.FileResult) {
				var names []string
				for _, e := range res.Entries {
					names = append(names, e.Name)
				}
				if strings.Join(names, ",") != "a.txt,b.txt,c,d" {
					t.Fatalf("entries %v", names)
				}
				e := res.Entries
				if e[1].Size != 2 || e[1].Mode != "-rw-r--r--" || e[1].IsDir || e[1].ModTime.IsZero() {
					t.Errorf("file entry %+v", e[1])
				}
				if !e[2].IsDir || e[2].Mode[0] != 'd' {
					t.Errorf("dir entry %+v", e[2])
				}
				if e[3].Link != "a.txt" || e[3].Mode[0] != 'l' {
					t.Errorf("symlink entry %+v", e[3])
				}
			},
		},
		{
			name:  "list a file",
			setup: func(t *testing.T) { mustWrite(t, "notdir.txt", "") },
			file:  wire.File{Action: wire.FileList, Path: "notdir.txt"},
			code:  wire.CodeNotDir,
		},
		{name: "list missing", file: wire.File{Action: wire.FileList, Path: "nodir"}, code: wire.CodeNotFound},
		{
			name:  "exists",
			setup: func(t *testing.T) { mustWrite(t, "here.txt", "") },
			file:  wire.File{Action: wire.FileExists, Path: "here.txt"},
			check: func(t *testing.T, res *wire.FileResult) {
				if !res.Exists {
					t.Error("exists = false")
				}
			},
		},
		{
			name: "exists missing is not an error",
			file: wire.File{Action: wire.FileExists, Path: "gone/deeper.txt"},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Exists {
					t.Error("exists = true")
				}
			},
		},
		{
			name: "mkdir",
			file: wire.File{Action: wire.FileMkdir, Path: "m/k/d"},
			check: func(t *testing.T, _ *wire.FileResult) {
				if info, err := os.Stat(filepath.Join(ws, "m/k/d")); err != nil || !info.IsDir() {
					t.Errorf("not a directory: %v", err)
				}
			},
		},
		{
			name:  "mkdir over a file",
			setup: func(t *testing.T) { mustWrite(t, "afile", "") },
			file:  wire.File{Action: wire.FileMkdir, Path: "afile"},
			code:  wire.CodeExists,
		},
		{
			name:  "stat a symlink",
			setup: func(t *testing.T) { os.Symlink("nowhere", filepath.Join(ws, "dangling")) },
			file:  wire.File{Action: wire.FileStat, Path: "dangling"},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.Info == nil || res.Info.Name != "dangling" || res.Info.Link != "nowhere" || res.Info.Mode != "lrwxrwxrwx" {
					t.Errorf("info %+v", res.Info)
				}
			},
		},
		{name: "stat missing", file: wire.File{Action: wire.FileStat, Path: "nothing"}, code: wire.CodeNotFound},
		{
			name: "statfs of the workspace",
			file: wire.File{Action: wire.FileStatFS, Path: "."},
			check: func(t *testing.T, res *wire.FileResult) {
				if res.FS == nil || res.FS.Total <= 0 || res.FS.Free < 0 || res.FS.Free > res.FS.Total || res.FS.Avail > res.FS.Free {
					t.Errorf("fs %+v", res.FS)
				}
			},
		},
		{name: "statfs missing", file: wire.File{Action: wire.FileStatFS, Path: "nothing"}, code: wire.CodeNotFound},
		{name: "empty path", file: wire.File{Action: wire.FileRead}, code: wire.CodeInvalid},
		{name: "NUL in path", file: wire.File{Action: wire.FileRead, Path: "a\x00b"}, code: wire.CodeInvalid},
		{name: "unknown action", file: wire.File{Action: "chmod", Path: "x"}, code: wire.CodeInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			file := tc.file
			resp := a.call(wire.Request{Op: wire.OpFile, File: &file})
			if resp.Code != tc.code {
				t.Fatalf("code %q (%s), want %q", resp.Code, resp.Error, tc.code)
			}
			if tc.code == "" && (resp.Kind != wire.KindResult || resp.File == nil) {
				t.Fatalf("response %+v, want a result", resp)
			}
			if tc.code != "" && !strings.Contains(resp.Error, ws) && file.Path != "" && !strings.ContainsRune(file.Path, 0) && file.Action != "chmod" {
				t.Errorf("error %q does not name the path", resp.Error)
			}
			if tc.check != nil {
				tc.check(t, resp.File)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(ws, "pwned")); err == nil {
		t.Error("a shell ran the $(...) in a file name")
	}
}

func TestFileErrorMessages(t *testing.T) {
	tests := []struct {
		doing string
		err   error
		want  string
		code  wire.Code
	}{
		{"writing", &fs.PathError{Op: "open", Path: "/etc/x", Err: syscall.EROFS}, "writing /etc/x: read-only file system", wire.CodePermission},
		{"reading", &fs.PathError{Op: "open", Path: "/etc/x", Err: syscall.EACCES}, "reading /etc/x: permission denied", wire.CodePermission},
		{"writing", &fs.PathError{Op: "write", Path: "/etc/x", Err: syscall.ENOSPC}, "writing /etc/x: no space left on device", wire.CodeNoSpace},
		{"deleting", &fs.PathError{Op: "remove", Path: "/etc/x", Err: syscall.ENOTEMPTY}, "deleting /etc/x: directory not empty", wire.CodeNotEmpty},
		{"creating", &fs.PathError{Op: "open", Path: "/etc/x", Err: syscall.EEXIST}, "creating /etc/x: file exists", wire.CodeExists},
		{"reading", syscall.EIO, "reading /etc/x: input/output error", wire.CodeInternal},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			resp := errorResponse(fileError(tc.doing, "/etc/x", tc.err))
			if resp.Error != tc.want || resp.Code != tc.code {
				t.Errorf("got %q %q, want %q %q", resp.Error, resp.Code, tc.want, tc.code)
			}
		})
	}
}

func TestLsMode(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		want string
	}{
		{0o644, "-rw-r--r--"},
		{fs.ModeDir | 0o755, "drwxr-xr-x"},
		{fs.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{fs.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{fs.ModeSetgid | 0o640, "-rw-r-S---"},
		{fs.ModeDir | fs.ModeSticky | 0o777, "drwxrwxrwt"},
		{fs.ModeDevice | fs.ModeCharDevice | 0o666, "crw-rw-rw-"},
		{fs.ModeNamedPipe | 0o600, "prw-------"},
	}
	for _, tc := range tests {
		if got := lsMode(tc.mode); got != tc.want {
			t.Errorf("lsMode(%v) = %q, want %q", tc.mode, got, tc.want)
		}
	}
}

// TestListDirStopsAtItsCaps: a directory with more entries than a listing carries is
// listed up to the cap, in name order, with Truncated set.
func TestListDirStopsAtItsCaps(t *testing.T) {
	dir := t.TempDir()
	for i := range wire.MaxListEntries + 5 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	list, truncated, err := listDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !truncated || len(list) != wire.MaxListEntries || list[0].Name != "f000000" {
		t.Fatalf("listed %d (truncated %v); want the first %d in name order, truncated", len(list), truncated, wire.MaxListEntries)
	}
	for i := range 6 {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("f%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if list, truncated, err = listDir(dir); err != nil || truncated || len(list) != wire.MaxListEntries-1 {
		t.Fatalf("a listing under the cap: %d entries, truncated %v, %v", len(list), truncated, err)
	}
}
