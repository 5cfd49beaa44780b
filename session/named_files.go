package session

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// pageSize is the tmpfs's unit, which it rounds its size up to.
const pageSize = 4096

// full reports whether a session of size bytes with avail left is full: less than 1% of its
// size, or 16 KiB, is left (a program that hit the limit may have removed what it wrote,
// and the page each small file takes counts).
func full(size, avail int64) bool { return avail < max(16<<10, size/100) }

// sessionPath checks a client's file name and returns it cleaned, relative to the session's
// workspace (where the agent resolves relative paths). A name that is absolute or climbs
// out with ".." is refused: the API reaches the workspace only.
func sessionPath(name string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: filename %s %s", api.ErrBadRequest, strconv.Quote(cut(name, 200)), why)
	}
	switch {
	case strings.TrimSpace(name) == "":
		return "", fmt.Errorf("%w: a filename is required", api.ErrBadRequest)
	case strings.ContainsRune(name, 0):
		return "", bad("contains a NUL byte")
	case path.IsAbs(name):
		return "", bad("is absolute: filenames are relative to the session's workspace")
	case len(name) > 4096:
		return "", bad("is longer than 4096 bytes")
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", bad("leaves the session's workspace (\"..\")")
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", bad("names the workspace itself, not a file")
	}
	return clean, nil
}

// parseMode reads a file mode: octal text ("0755", "755", "0o755") or the bits as a JSON
// number (493, what Python's 0o755 encodes to); nil is 0 (the agent's default, 0644).
func parseMode(v any) (uint32, error) {
	switch m := v.(type) {
	case nil:
		return 0, nil
	case string:
		t := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(m), "0o"), "0O")
		bits, err := strconv.ParseUint(t, 8, 32)
		if err != nil || bits > 0o777 {
			return 0, fmt.Errorf("%w: mode %q: want octal permission bits from 0 to 0777, e.g. \"0644\"", api.ErrBadRequest, cut(m, 50))
		}
		return uint32(bits), nil
	case float64:
		if m != math.Trunc(m) || m < 0 || m > 0o777 {
			return 0, fmt.Errorf("%w: mode %v is not permission bits (0 to 511): write octal as a string, \"0755\", or its value, 493", api.ErrBadRequest, m)
		}
		return uint32(m), nil
	}
	return 0, fmt.Errorf("%w: mode must be octal text such as \"0644\" or a number", api.ErrBadRequest)
}

// CreateFile writes a file into owner's session name from req.
func (n *Named) CreateFile(ctx context.Context, owner, name string, req api.CreateFileRequest) (api.SessionFile, error) {
	mode, err := parseMode(req.Mode)
	if err != nil {
		return api.SessionFile{}, err
	}
	data := []byte(req.Content)
	switch strings.ToLower(req.Encoding) {
	case "", "utf-8", "utf8", "text":
	case "base64":
		if data, err = base64.StdEncoding.DecodeString(req.Content); err != nil {
			return api.SessionFile{}, fmt.Errorf("%w: content is not valid base64: %w", api.ErrBadRequest, err)
		}
	default:
		return api.SessionFile{}, fmt.Errorf("%w: encoding %q: want utf-8 or base64", api.ErrBadRequest, cut(req.Encoding, 50))
	}
	return n.write(ctx, owner, name, req.Filename, data, mode)
}

// Upload writes data as filename into owner's session name.
func (n *Named) Upload(ctx context.Context, owner, name, filename string, data []byte) (api.SessionFile, error) {
	return n.write(ctx, owner, name, filename, data, 0)
}

// write writes a file into a session. A write the workspace has no room for leaves no
// partial file behind and says the session is full (api.ErrNoSpace). A mode applies to the
// file as written, even one that replaced another.
func (n *Named) write(ctx context.Context, owner, name, filename string, data []byte, mode uint32) (api.SessionFile, error) {
	p, err := sessionPath(filename)
	if err != nil {
		return api.SessionFile{}, err
	}
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.SessionFile{}, err
	}
	defer done()
	if mode != 0 {
		// The mode of an existing file is kept by a write: start it afresh instead.
		if _, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileDelete, Path: p}); err != nil && !errors.Is(err, api.ErrNotFound) {
			return api.SessionFile{}, fmt.Errorf("replacing %s: %w", p, err)
		}
	}
	if _, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: p, Data: data, Mode: mode}); err != nil {
		if api.CodeOf(err) == api.CodeNoSpace {
			_, _ = s.sb.File(context.WithoutCancel(ctx), sandbox.FileRequest{Action: sandbox.FileDelete, Path: p})
			return api.SessionFile{}, n.fullError(ctx, s, fmt.Sprintf("writing %s (%d bytes)", p, len(data)))
		}
		return api.SessionFile{}, err
	}
	st, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileStat, Path: p})
	if err != nil || st.Info == nil {
		return api.SessionFile{Name: p, Size: int64(len(data)), Mode: fmt.Sprintf("%04o", mode), Modified: time.Now().UTC()}, nil
	}
	return sessionFile(p, *st.Info), nil
}

// fullError says that s has no room for what was being done.
func (n *Named) fullError(ctx context.Context, s *named, doing string) error {
	used := ""
	if fs, ok := n.workspaceFS(ctx, s); ok {
		used = fmt.Sprintf(", %s used", formatBytes(fs.Total-fs.Free))
	}
	return fmt.Errorf("%w: session %q is full (size %s%s): %s failed; remove files to make room",
		api.ErrNoSpace, s.key.name, formatSize(s.size), used, doing)
}

// workspaceFS describes the session's workspace file system when it is the session's own
// (a tmpfs of the session's size); on a backend without one (the process backend) ok is
// false.
func (n *Named) workspaceFS(ctx context.Context, s *named) (sandbox.FSInfo, bool) {
	res, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileStatFS, Path: "."})
	if err != nil || res.FS == nil {
		return sandbox.FSInfo{}, false
	}
	// tmpfs rounds its size up to whole pages.
	pages := (s.size + pageSize - 1) / pageSize * pageSize
	if res.FS.Total <= 0 || res.FS.Total > pages {
		return sandbox.FSInfo{}, false
	}
	return *res.FS, true
}

// formatBytes writes a byte count for a person.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + "G"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "M"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + "K"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// sessionFile describes a listed entry at rel.
func sessionFile(rel string, info sandbox.FileInfo) api.SessionFile {
	return api.SessionFile{
		Name: rel, Size: info.Size, Mode: fmt.Sprintf("%04o", lsPerm(info.Mode)), IsDir: info.IsDir, Modified: info.ModTime.UTC(),
	}
}

// Files lists owner's session name: every entry under the workspace, depth first, by
// relative name. The listing stops at the archive entry limit, with Truncated set.
func (n *Named) Files(ctx context.Context, owner, name string) (api.SessionFiles, error) {
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.SessionFiles{}, err
	}
	defer done()
	files, truncated, err := n.walkSession(ctx, s)
	if err != nil {
		return api.SessionFiles{}, err
	}
	return api.SessionFiles{SessionID: name, Files: files, Truncated: truncated}, nil
}

// walkSession lists a session's workspace, at most MaxArchiveEntries entries. Symlinks are
// listed, never followed.
func (n *Named) walkSession(ctx context.Context, s *named) ([]api.SessionFile, bool, error) {
	out := []api.SessionFile{}
	limit := n.core.limits.MaxArchiveEntries
	var visit func(rel string) (bool, error)
	visit = func(rel string) (bool, error) {
		dir := rel
		if dir == "" {
			dir = "."
		}
		list, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileList, Path: dir})
		if err != nil {
			return false, err
		}
		for _, e := range list.Entries {
			if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
				continue
			}
			if len(out) == limit {
				return true, nil
			}
			child := path.Join(rel, e.Name)
			out = append(out, sessionFile(child, e))
			if kind, ok := kindOf(e); ok && kind == kindDir {
				if stop, err := visit(child); stop || err != nil {
					return stop, err
				}
			}
		}
		return list.Truncated, nil
	}
	truncated, err := visit("")
	return out, truncated, err
}

// Download reads filename out of owner's session name, up to the download limit.
func (n *Named) Download(ctx context.Context, owner, name, filename string) ([]byte, error) {
	p, err := sessionPath(filename)
	if err != nil {
		return nil, err
	}
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	defer done()
	return n.core.readFile(ctx, s.sb, p, n.core.limits.MaxDownloadBytes)
}

// Status describes owner's session name: its size limit and what its files use, its
// clock, and the commands running in it.
func (n *Named) Status(ctx context.Context, owner, name string) (api.SessionStatus, error) {
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.SessionStatus{}, err
	}
	files, truncated, err := n.walkSession(ctx, s)
	done()
	if err != nil {
		return api.SessionStatus{}, err
	}
	st := api.SessionStatus{SessionInfo: n.info(s), Truncated: truncated, Processes: []api.SessionProcess{}}
	for _, f := range files {
		if !f.IsDir {
			st.Files++
			st.UsedBytes += f.Size
		}
	}
	if fs, ok := n.workspaceFS(ctx, s); ok {
		// The file system's own count: it includes directories and the page each small
		// file takes, which is what fills the session.
		st.UsedBytes = fs.Total - fs.Free
		st.Full = full(s.size, fs.Avail)
	}
	s.mu.Lock()
	for _, id := range slices.Sorted(maps.Keys(s.running)) {
		st.Processes = append(st.Processes, s.running[id])
	}
	s.mu.Unlock()
	st.RunningProcesses = len(st.Processes)
	st.ExpiresAt = st.LastActive.Add(n.cfg.IdleTimeout)
	return st, nil
}
