package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// File operations are plain system calls on the path as given. Nothing passes through a
// shell, so quotes, spaces, newlines or "$(...)" in a name are just characters of the name.

const (
	defaultFileMode = 0o644
	defaultDirMode  = 0o755
)

func (s *server) file(req *wire.File) (*wire.FileResult, error) {
	if req == nil {
		return nil, errorf(wire.CodeInvalid, "file request has no file field")
	}
	if req.Path == "" {
		return nil, errorf(wire.CodeInvalid, "file request needs a path")
	}
	if strings.ContainsRune(req.Path, 0) {
		return nil, errorf(wire.CodeInvalid, "path %q contains a NUL byte", req.Path)
	}
	path := s.resolve(req.Path)
	res := &wire.FileResult{Path: path}
	var err error
	switch req.Action {
	case wire.FileRead:
		res.Data, res.Truncated, err = readFile(path, req.MaxBytes)
	case wire.FileWrite:
		res.Written, err = writeFile(path, req, false)
	case wire.FileCreate:
		res.Written, err = writeFile(path, req, true)
	case wire.FileDelete:
		err = deletePath(path, req.Recursive)
	case wire.FileList:
		res.Entries, res.Truncated, err = listDir(path)
	case wire.FileExists:
		res.Exists, err = exists(path)
	case wire.FileMkdir:
		err = makeDir(path, req.Mode)
	case wire.FileStat:
		var info wire.FileInfo
		info, err = statPath(path)
		res.Info = &info
	case wire.FileStatFS:
		res.FS, err = statFS(path)
	default:
		err = errorf(wire.CodeInvalid, "unknown file action %q (valid: %s, %s, %s, %s, %s, %s, %s, %s, %s)", req.Action,
			wire.FileRead, wire.FileWrite, wire.FileCreate, wire.FileDelete,
			wire.FileList, wire.FileExists, wire.FileMkdir, wire.FileStat, wire.FileStatFS)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func readFile(path string, limit int64) (data []byte, truncated bool, err error) {
	if limit < 0 {
		return nil, false, errorf(wire.CodeInvalid, "reading %s: max_bytes must not be negative", path)
	}
	if limit == 0 {
		limit = wire.DefaultMaxReadBytes
	}
	// O_NONBLOCK keeps opening a FIFO from hanging until someone writes to it; for a
	// regular file it changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, fileError("reading", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, false, fileError("reading", path, err)
	}
	switch {
	case info.IsDir():
		return nil, false, fileError("reading", path, syscall.EISDIR)
	case !info.Mode().IsRegular():
		return nil, false, errorf(wire.CodeInvalid, "reading %s: not a regular file (%s)", path, lsMode(info.Mode()))
	}
	// Reading one byte past the limit tells a file of exactly limit bytes from a longer one.
	buf := bytes.NewBuffer(make([]byte, 0, min(info.Size(), limit)+1))
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, false, fileError("reading", path, err)
	}
	data = buf.Bytes()
	if int64(len(data)) > limit {
		return data[:limit], true, nil
	}
	return data, false, nil
}

// writeFile writes req.Data to path, creating missing parent directories. With exclusive
// it refuses a path that exists.
func writeFile(path string, req *wire.File, exclusive bool) (int64, error) {
	doing := "writing"
	flags := os.O_WRONLY | os.O_CREATE | syscall.O_NONBLOCK // O_NONBLOCK: see readFile
	switch {
	case exclusive:
		doing = "creating"
		flags |= os.O_EXCL
	case req.Append:
		flags |= os.O_APPEND
	default:
		flags |= os.O_TRUNC
	}
	if err := os.MkdirAll(filepath.Dir(path), defaultDirMode); err != nil {
		return 0, fileError(doing, path, err)
	}
	f, err := os.OpenFile(path, flags, permOr(req.Mode, defaultFileMode))
	if err != nil {
		return 0, fileError(doing, path, err)
	}
	n, err := f.Write(req.Data)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return int64(n), fileError(doing, path, err)
	}
	return int64(n), nil
}

// statFS describes the file system that holds path: a workspace tmpfs's size is its quota.
func statFS(path string) (*wire.FSInfo, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return nil, fileError("inspecting the file system of", path, err)
	}
	bsize := int64(st.Bsize)
	return &wire.FSInfo{Total: int64(st.Blocks) * bsize, Free: int64(st.Bfree) * bsize, Avail: int64(st.Bavail) * bsize}, nil
}

func deletePath(path string, recursive bool) error {
	info, err := os.Lstat(path)
	if err != nil {
		return fileError("deleting", path, err)
	}
	if info.IsDir() && recursive {
		err = os.RemoveAll(path)
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		return fileError("deleting", path, err)
	}
	return nil
}

// listDir lists a directory in name order, up to wire.MaxListEntries entries and
// wire.MaxListBytes of names and link targets; truncated says it stopped there.
func listDir(path string) (list []wire.FileInfo, truncated bool, err error) {
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, false, fileError("listing", path, err)
	}
	list = make([]wire.FileInfo, 0, min(len(entries), wire.MaxListEntries))
	size := 0
	for _, entry := range entries {
		info, err := entry.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since the directory was read
		}
		if err != nil {
			return nil, false, fileError("listing", filepath.Join(path, entry.Name()), err)
		}
		fi := describe(info, filepath.Join(path, entry.Name()))
		size += len(fi.Name) + len(fi.Link)
		if len(list) == wire.MaxListEntries || size > wire.MaxListBytes {
			return list, true, nil
		}
		list = append(list, fi)
	}
	return list, false, nil
}

// exists reports whether there is an entry at path; a dangling symlink is one.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return false, nil
	default:
		return false, fileError("checking", path, err)
	}
}

func makeDir(path string, mode uint32) error {
	err := os.MkdirAll(path, permOr(mode, defaultDirMode))
	if errors.Is(err, syscall.ENOTDIR) {
		// MkdirAll says "not a directory" about a path that exists as a file, which
		// reads better as what it is.
		if info, statErr := os.Lstat(path); statErr == nil && !info.IsDir() {
			return errorf(wire.CodeExists, "creating directory %s: a file exists there", path)
		}
	}
	if err != nil {
		return fileError("creating directory", path, err)
	}
	return nil
}

func statPath(path string) (wire.FileInfo, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return wire.FileInfo{}, fileError("inspecting", path, err)
	}
	return describe(info, path), nil
}

func describe(info fs.FileInfo, path string) wire.FileInfo {
	d := wire.FileInfo{
		Name:    info.Name(),
		Size:    info.Size(),
		Mode:    lsMode(info.Mode()),
		IsDir:   info.IsDir(),
		ModTime: info.ModTime().UTC(),
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		d.Link, _ = os.Readlink(path)
	}
	return d
}

// permOr is the permission bits of mode, or fallback when mode is zero.
func permOr(mode uint32, fallback fs.FileMode) fs.FileMode {
	if mode == 0 {
		return fallback
	}
	return fs.FileMode(mode).Perm()
}

// lsMode renders a mode as ls -l does ("drwxr-xr-x"); fs.FileMode.String differs for
// symlinks, devices and the set-id bits.
func lsMode(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m&fs.ModeDir != 0:
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if m&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	special := func(set bool, at int, lower, upper byte) {
		if !set {
			return
		}
		if b[at] == '-' {
			b[at] = upper // the bit without execute permission
		} else {
			b[at] = lower
		}
	}
	special(m&fs.ModeSetuid != 0, 3, 's', 'S')
	special(m&fs.ModeSetgid != 0, 6, 's', 'S')
	special(m&fs.ModeSticky != 0, 9, 't', 'T')
	return string(b)
}

// fileError describes a failed operation as "<doing> <path>: <reason>", with the reason
// bare (the os package would repeat the path and name the system call), and classifies it.
func fileError(doing, path string, err error) error {
	cause := err
	var pathErr *fs.PathError
	var sysErr *os.SyscallError
	switch {
	case errors.As(err, &pathErr):
		cause = pathErr.Err
	case errors.As(err, &sysErr):
		cause = sysErr.Err
	}
	return &codedError{code: codeOf(err), err: fmt.Errorf("%s %s: %w", doing, path, cause)}
}

// codeOf classifies a system error for the wire.
func codeOf(err error) wire.Code {
	is := func(targets ...error) bool {
		for _, target := range targets {
			if errors.Is(err, target) {
				return true
			}
		}
		return false
	}
	switch {
	case is(fs.ErrNotExist):
		return wire.CodeNotFound
	case is(syscall.ENOTEMPTY): // before ErrExist, which matches ENOTEMPTY too
		return wire.CodeNotEmpty
	case is(fs.ErrExist):
		return wire.CodeExists
	case is(syscall.EISDIR):
		return wire.CodeIsDir
	case is(syscall.ENOTDIR):
		return wire.CodeNotDir
	case is(syscall.EACCES, syscall.EPERM, syscall.EROFS):
		return wire.CodePermission
	case is(syscall.ENOSPC, syscall.EDQUOT):
		return wire.CodeNoSpace
	case is(syscall.EFBIG):
		return wire.CodeTooLarge
	default:
		return wire.CodeInternal
	}
}
