package api

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// PutDir copies the contents of a host directory under targetDir in sandbox id, by
// streaming it as a tar (see TarDir) into m.PutArchive. Both implementations of Manager
// implement their PutDir with it.
func PutDir(ctx context.Context, m Manager, id, hostDir, targetDir string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(TarDir(hostDir, pw)) }()
	err := m.PutArchive(ctx, id, targetDir, pr)
	_ = pr.CloseWithError(errors.New("upload ended")) // stops the writer if the upload stopped early
	return err
}

// TarDir writes the contents of a host directory to w as a tar stream, the way ms-enclave's
// put_dir does: names relative to dir without a leading "./", directory entries included,
// the host's uid, gid and mode kept. Symlinks and special files are an error: the server
// would refuse them anyway, and failing here names the host path.
func TarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s is a %s: only regular files and directories can be uploaded", p, info.Mode().Type())
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, hdr.Size)
		return err
	})
	if err != nil {
		return fmt.Errorf("archiving %s: %w", dir, err)
	}
	return tw.Close()
}
