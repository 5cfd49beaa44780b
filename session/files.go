package session

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Files go in and out through the sandbox's agent (its file operations), never through the
// engine's archive API: the workspace is a tmpfs on a read-only root file system, which the
// engine's CopyToContainer and CopyFromContainer cannot reach.

// archiveEntry is one checked entry of an uploaded tar.
type archiveEntry struct {
	name string // relative, cleaned, never escaping
	dir  bool
	mode uint32
	data []byte
}

// PutArchive implements api.Manager. The whole archive is read and checked before anything is
// written, so a bad entry (a path escaping targetDir, a symlink, a device) leaves the
// sandbox untouched.
func (l *Caller) PutArchive(ctx context.Context, id, targetDir string, tarball io.Reader) error {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return err
	}
	if err := runnable(sb.Info(), "create a new one"); err != nil {
		return err
	}
	entries, err := readArchive(tarball, l.limits.MaxArchiveBytes, l.limits.MaxArchiveEntries)
	if err != nil {
		return err
	}
	target, err := targetPath(sb, targetDir)
	if err != nil {
		return err
	}
	if _, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileMkdir, Path: target}); err != nil {
		return fmt.Errorf("creating target directory %s: %w", target, err)
	}
	for _, e := range entries {
		req := sandbox.FileRequest{Path: path.Join(target, e.name), Mode: e.mode}
		if e.dir {
			// Owner write access is kept so the entries inside can still be written.
			req.Action, req.Mode = sandbox.FileMkdir, e.mode|0o700
		} else {
			req.Action, req.Data = sandbox.FileWrite, e.data
		}
		if _, err := sb.File(ctx, req); err != nil {
			return fmt.Errorf("extracting %s: %w", e.name, err)
		}
	}
	return nil
}

// targetPath is targetDir made absolute: relative paths (and "") are taken from the
// workspace, as the tools take them.
func targetPath(sb sandbox.Sandbox, targetDir string) (string, error) {
	if strings.ContainsRune(targetDir, 0) {
		return "", fmt.Errorf("%w: target_dir contains a NUL byte", api.ErrBadRequest)
	}
	if path.IsAbs(targetDir) {
		return path.Clean(targetDir), nil
	}
	return path.Join(WorkingDir(sb), targetDir), nil
}

// readArchive reads and checks a tar stream of at most maxBytes and maxEntries, whose files
// hold at most maxBytes in all once extracted.
func readArchive(r io.Reader, maxBytes int64, maxEntries int) ([]archiveEntry, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	tooLarge := func() error {
		return fmt.Errorf("%w: the archive is larger than the %d-byte limit", api.ErrTooLarge, maxBytes)
	}
	tr := tar.NewReader(lr)
	var (
		entries   []archiveEntry
		extracted int64 // file bytes as they will be written
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if lr.N <= 0 {
			return nil, tooLarge()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading the tar stream: %w", api.ErrInvalidArchive, err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return nil, err
		}
		e := archiveEntry{name: name, mode: uint32(hdr.Mode) & 0o777}
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.dir = true
		case tar.TypeReg, 0: // 0 is the pre-POSIX spelling of a regular file
			// The content is bounded by what it expands to, not only by the stream: a
			// sparse entry of a few bytes on the wire reads back as gigabytes of zeros.
			if hdr.Size > maxBytes-extracted {
				return nil, tooLarge()
			}
			if e.data, err = io.ReadAll(io.LimitReader(tr, maxBytes-extracted+1)); err != nil {
				if lr.N <= 0 {
					return nil, tooLarge()
				}
				return nil, fmt.Errorf("%w: reading %s: %w", api.ErrInvalidArchive, hdr.Name, err)
			}
			if extracted += int64(len(e.data)); extracted > maxBytes {
				return nil, tooLarge()
			}
		case tar.TypeSymlink, tar.TypeLink:
			return nil, fmt.Errorf("%w: entry %q is a link (to %q): only regular files and directories can be uploaded",
				api.ErrInvalidArchive, hdr.Name, hdr.Linkname)
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return nil, fmt.Errorf("%w: entry %q is a device or pipe: only regular files and directories can be uploaded",
				api.ErrInvalidArchive, hdr.Name)
		default:
			return nil, fmt.Errorf("%w: entry %q has tar type %q, which is not supported: only regular files and directories can be uploaded",
				api.ErrInvalidArchive, hdr.Name, string(hdr.Typeflag))
		}
		if name == "" { // the archive's root ("./"): the target directory itself
			continue
		}
		if len(entries) == maxEntries {
			return nil, fmt.Errorf("%w: the archive has more than %d entries", api.ErrTooLarge, maxEntries)
		}
		entries = append(entries, e)
	}
	if lr.N <= 0 {
		return nil, tooLarge()
	}
	return entries, nil
}

// entryName checks a tar entry's name and returns it cleaned and relative; "" is the root.
// A leading "./" is tolerated; an absolute name or any ".." element is refused, so no entry
// can land outside the target directory.
func entryName(name string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: entry %q %s", api.ErrInvalidArchive, name, why)
	}
	switch {
	case strings.ContainsRune(name, 0):
		return "", bad("contains a NUL byte")
	case strings.HasPrefix(name, "/"):
		return "", bad("is an absolute path: entries must be relative to target_dir")
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", bad("contains \"..\": entries must stay inside target_dir")
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// PutDir implements api.Manager.
func (l *Caller) PutDir(ctx context.Context, id, hostDir, targetDir string) error {
	return api.PutDir(ctx, l, id, hostDir, targetDir)
}

// Download implements api.Manager. A directory is walked (and its size checked against the
// limit) before the first byte is sent; its tar is then streamed, one file at a time.
//
// The sandbox is not trusted to describe its own files: whatever its listings claim, the
// tar holds only clean relative names inside the requested directory, symlinks that lead
// nowhere outside it (see linkTarget), and no more file bytes in all than the download
// limit, counted as they are read.
func (l *Caller) Download(ctx context.Context, id, p string) (*api.Download, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return nil, err
	}
	if err := runnable(sb.Info(), "create a new one"); err != nil {
		return nil, err
	}
	if p == "" {
		return nil, fmt.Errorf("%w: a path is required", api.ErrBadRequest)
	}
	st, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileStat, Path: p})
	if err != nil {
		return nil, err
	}
	if st.Path == "" {
		st.Path = p
	}
	if st.Info == nil || !st.Info.IsDir {
		data, err := l.readFile(ctx, sb, st.Path, l.limits.MaxDownloadBytes)
		if err != nil {
			return nil, err
		}
		return &api.Download{ReadCloser: io.NopCloser(bytes.NewReader(data)), Name: downloadName(st.Path), Size: int64(len(data))}, nil
	}
	tree, err := l.walk(ctx, sb, st.Path)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.writeTree(ctx, sb, st.Path, tree, pw)) }()
	return &api.Download{ReadCloser: pr, Name: downloadName(st.Path), Dir: true, Size: -1}, nil
}

// downloadName is the name a download is offered under: the path's base name, or
// "download" when that is no file name.
func downloadName(p string) string {
	name := path.Base(p)
	if name == "/" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return "download"
	}
	return name
}

// readFile reads p, refusing a file over limit (limit > 0). The length is checked here too,
// not only the sandbox's Truncated flag.
func (l *Core) readFile(ctx context.Context, sb sandbox.Sandbox, p string, limit int64) ([]byte, error) {
	res, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: p, MaxBytes: limit})
	if err != nil {
		return nil, err
	}
	if res.Truncated || int64(len(res.Data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than the %d-byte download limit", api.ErrTooLarge, p, l.limits.MaxDownloadBytes)
	}
	return res.Data, nil
}

// entryKind is what an entry of a downloaded tree becomes in the tar.
type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
)

// treeEntry is one checked entry of a directory being downloaded.
type treeEntry struct {
	rel     string // clean, relative to the root, no ".." element
	kind    entryKind
	link    string // a symlink's target as the sandbox gave it
	mode    string // as ls shows it
	modTime time.Time
}

// walk lists the tree under root, depth first, refusing one over the download limits (by
// the sizes listed; writeTree counts what it reads). Sockets, pipes and devices are left
// out: they have no content to send. So are names holding a backslash, which an extractor
// on Windows would take as a path ("..\\x"). A name that no file can have ("", ".", "..",
// one with "/" or NUL) or one listed twice can only be a lie: the download fails.
func (l *Core) walk(ctx context.Context, sb sandbox.Sandbox, root string) ([]treeEntry, error) {
	var (
		out   []treeEntry
		seen  = map[string]bool{}
		total int64
	)
	var visit func(rel string) error
	visit = func(rel string) error {
		list, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileList, Path: path.Join(root, rel)})
		if err != nil {
			return err
		}
		if list.Truncated {
			return fmt.Errorf("%w: %s has more entries than one listing returns (%d): download a subdirectory", api.ErrTooLarge, path.Join(root, rel), len(list.Entries))
		}
		for _, e := range list.Entries {
			if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
				return fmt.Errorf("the sandbox listed %q in %s, which is not a file name: download refused", e.Name, path.Join(root, rel))
			}
			if strings.ContainsRune(e.Name, '\\') {
				continue
			}
			child := path.Join(rel, e.Name)
			if seen[child] {
				return fmt.Errorf("the sandbox listed %s twice: download refused", path.Join(root, child))
			}
			seen[child] = true
			kind, ok := kindOf(e)
			if !ok {
				continue
			}
			if len(out) == l.limits.MaxArchiveEntries {
				return fmt.Errorf("%w: %s holds more than %d entries", api.ErrTooLarge, root, l.limits.MaxArchiveEntries)
			}
			out = append(out, treeEntry{rel: child, kind: kind, link: e.Link, mode: e.Mode, modTime: e.ModTime})
			if kind == kindFile {
				if total += max(e.Size, 0); total > l.limits.MaxDownloadBytes {
					return fmt.Errorf("%w: the files under %s are larger than the %d-byte download limit", api.ErrTooLarge, root, l.limits.MaxDownloadBytes)
				}
			}
			if kind == kindDir {
				if err := visit(child); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, visit("")
}

// kindOf reads what a listed entry is. A symlink is a symlink whatever else is claimed (it
// is never walked into); a directory must say so both ways; ok is false for the rest.
func kindOf(e sandbox.FileInfo) (entryKind, bool) {
	letter := byte('-')
	if e.Mode != "" {
		letter = e.Mode[0]
	}
	switch {
	case e.Link != "" || letter == 'l':
		return kindSymlink, true
	case e.IsDir && letter == 'd':
		return kindDir, true
	case !e.IsDir && letter == '-':
		return kindFile, true
	}
	return 0, false
}

// writeTree writes tree as a tar stream. A file's header is written after it is read, so
// its size is what was read even if the file changed since the walk, and the bytes read in
// all are bounded by the download limit whatever sizes the listing gave. Symlinks whose
// target leads outside the tree are left out.
func (l *Core) writeTree(ctx context.Context, sb sandbox.Sandbox, root string, tree []treeEntry, w io.Writer) error {
	kinds := make(map[string]entryKind, len(tree))
	for _, e := range tree {
		kinds[e.rel] = e.kind
	}
	left := l.limits.MaxDownloadBytes
	tw := tar.NewWriter(w)
	for _, e := range tree {
		hdr := &tar.Header{Name: e.rel, Mode: int64(lsPerm(e.mode)), ModTime: e.modTime, Format: tar.FormatPAX}
		var data []byte
		switch e.kind {
		case kindDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.rel+"/"
		case kindSymlink:
			target, ok := linkTarget(root, e.rel, e.link, kinds)
			if !ok {
				continue
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
		default:
			if left <= 0 {
				return fmt.Errorf("%w: the files under %s are larger than the %d-byte download limit", api.ErrTooLarge, root, l.limits.MaxDownloadBytes)
			}
			var err error
			if data, err = l.readFile(ctx, sb, path.Join(root, e.rel), left); err != nil {
				return err
			}
			left -= int64(len(data))
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// linkTarget is the target a symlink at rel gets in the tar, or ok false to leave it out.
//
// Symlinks are rewritten rather than all dropped, so that a downloaded virtualenv or build
// tree keeps its relative links (lib64 -> lib), but only when the target stays inside the
// tree: an absolute target is taken as a path in the sandbox and must lie under root. The
// target is followed element by element from the link's directory ("..", names), and
// refused if it climbs above the root or passes through another symlink of the tree (which
// could lead anywhere: "up" -> ".." one level down is harmless alone, but "up/.." is not).
// The result is written as the shortest relative path to where it leads, so it climbs only
// through the link's own parent directories, which are real directories of the tar. Its
// last element may be another symlink: that one is checked on its own account or left
// out, so following it cannot leave the tree either.
func linkTarget(root, rel, target string, kinds map[string]entryKind) (string, bool) {
	if target == "" || strings.ContainsAny(target, "\\\x00") {
		return "", false
	}
	var at []string // where the target leads, as elements below root
	steps := strings.Split(target, "/")
	if path.IsAbs(target) {
		root, clean := path.Clean(root), path.Clean(target)
		if root != "/" && clean != root && !strings.HasPrefix(clean, root+"/") {
			return "", false
		}
		steps = strings.Split(strings.TrimPrefix(strings.TrimPrefix(clean, root), "/"), "/")
	} else if dir := path.Dir(rel); dir != "." {
		at = strings.Split(dir, "/")
	}
	for i, step := range steps {
		switch step {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return "", false
			}
			at = at[:len(at)-1]
			continue
		}
		at = append(at, step)
		if kinds[strings.Join(at, "/")] == kindSymlink && slices.ContainsFunc(steps[i+1:], func(s string) bool { return s != "" && s != "." }) {
			return "", false
		}
	}
	var from []string
	if dir := path.Dir(rel); dir != "." {
		from = strings.Split(dir, "/")
	}
	common := 0
	for common < len(from) && common < len(at) && from[common] == at[common] {
		common++
	}
	parts := slices.Repeat([]string{".."}, len(from)-common)
	parts = append(parts, at[common:]...)
	if len(parts) == 0 {
		return ".", true
	}
	return strings.Join(parts, "/"), true
}

// lsPerm reads the permission bits of a mode written as ls shows it ("drwxr-x---"); the
// set-id and sticky letters (s, S, t, T) count as execute or not as ls spells them.
func lsPerm(mode string) uint32 {
	if len(mode) < 10 {
		return 0o644
	}
	var perm uint32
	for i, c := range mode[1:10] {
		if c != '-' && c != 'S' && c != 'T' {
			perm |= 1 << (8 - i)
		}
	}
	return perm
}
