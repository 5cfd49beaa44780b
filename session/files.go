package session

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

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
	wd := sandbox.DefaultWorkingDir
	if rc, ok := sb.(configured); ok && rc.Config().WorkingDir != "" {
		wd = rc.Config().WorkingDir
	}
	return path.Join(wd, targetDir), nil
}

// readArchive reads and checks a tar stream of at most maxBytes and maxEntries.
func readArchive(r io.Reader, maxBytes int64, maxEntries int) ([]archiveEntry, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	tooLarge := func() error {
		return fmt.Errorf("%w: the archive is larger than the %d-byte limit", api.ErrTooLarge, maxBytes)
	}
	tr := tar.NewReader(lr)
	var entries []archiveEntry
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
			if e.data, err = io.ReadAll(tr); err != nil {
				if lr.N <= 0 {
					return nil, tooLarge()
				}
				return nil, fmt.Errorf("%w: reading %s: %w", api.ErrInvalidArchive, hdr.Name, err)
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
	if st.Info == nil || !st.Info.IsDir {
		data, err := l.readFile(ctx, sb, st.Path)
		if err != nil {
			return nil, err
		}
		return &api.Download{ReadCloser: io.NopCloser(bytes.NewReader(data)), Name: path.Base(st.Path), Size: int64(len(data))}, nil
	}
	tree, err := l.walk(ctx, sb, st.Path)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.writeTree(ctx, sb, st.Path, tree, pw)) }()
	return &api.Download{ReadCloser: pr, Name: path.Base(st.Path), Dir: true, Size: -1}, nil
}

func (l *Core) readFile(ctx context.Context, sb sandbox.Sandbox, p string) ([]byte, error) {
	res, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: p, MaxBytes: l.limits.MaxDownloadBytes})
	if err != nil {
		return nil, err
	}
	if res.Truncated {
		return nil, fmt.Errorf("%w: %s is larger than the %d-byte download limit", api.ErrTooLarge, p, l.limits.MaxDownloadBytes)
	}
	return res.Data, nil
}

// treeEntry is one entry of a directory being downloaded.
type treeEntry struct {
	rel  string
	info sandbox.FileInfo
}

// walk lists the tree under root, depth first, refusing one over the download limits.
// Sockets, pipes and devices are left out: they have no content to send.
func (l *Core) walk(ctx context.Context, sb sandbox.Sandbox, root string) ([]treeEntry, error) {
	var (
		out   []treeEntry
		total int64
	)
	var visit func(rel string) error
	visit = func(rel string) error {
		list, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileList, Path: path.Join(root, rel)})
		if err != nil {
			return err
		}
		for _, e := range list.Entries {
			child := path.Join(rel, e.Name)
			kind := byte('-')
			if e.Mode != "" {
				kind = e.Mode[0]
			}
			if kind != '-' && kind != 'd' && kind != 'l' {
				continue
			}
			if len(out) == l.limits.MaxArchiveEntries {
				return fmt.Errorf("%w: %s holds more than %d entries", api.ErrTooLarge, root, l.limits.MaxArchiveEntries)
			}
			out = append(out, treeEntry{rel: child, info: e})
			if kind == '-' {
				if total += e.Size; total > l.limits.MaxDownloadBytes {
					return fmt.Errorf("%w: the files under %s are larger than the %d-byte download limit", api.ErrTooLarge, root, l.limits.MaxDownloadBytes)
				}
			}
			if e.IsDir {
				if err := visit(child); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, visit("")
}

// writeTree writes tree as a tar stream. A file's header is written after it is read, so
// its size is what was read even if the file changed since the walk.
func (l *Core) writeTree(ctx context.Context, sb sandbox.Sandbox, root string, tree []treeEntry, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, e := range tree {
		hdr := &tar.Header{Name: e.rel, Mode: int64(lsPerm(e.info.Mode)), ModTime: e.info.ModTime, Format: tar.FormatPAX}
		var data []byte
		switch {
		case e.info.IsDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.rel+"/"
		case e.info.Link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.info.Link
		default:
			var err error
			if data, err = l.readFile(ctx, sb, path.Join(root, e.rel)); err != nil {
				return err
			}
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
