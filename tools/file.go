package tools

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// FileParams are file_operation's parameters (ms-enclave's names, plus mkdir, stat, base64
// and recursive delete).
type FileParams struct {
	Operation string  `json:"operation" jsonschema:"enum=create,enum=read,enum=write,enum=delete,enum=list,enum=exists,enum=mkdir,enum=stat" jsonschema_description:"create: write content (empty by default) to a file, replacing it. read: return the file's content. write: write content to a file, replacing it (content required). delete: remove a file or empty directory (recursive for a tree). list: the entries of a directory. exists: whether the path exists. mkdir: create a directory and its parents. stat: size, mode and type of a path."`
	FilePath  string  `json:"file_path" jsonschema_description:"Path in the sandbox: absolute, or relative to the workspace (the default working directory). Taken literally: no shell expansion or globbing."`
	Content   *string `json:"content,omitempty" jsonschema_description:"The content for create and write, encoded as encoding says."`
	Encoding  string  `json:"encoding,omitempty" jsonschema:"enum=utf-8,enum=base64" jsonschema_description:"How content is passed and read output is returned: utf-8 text, or base64 for binary files. Default utf-8."`
	Recursive bool    `json:"recursive,omitempty" jsonschema_description:"For delete: remove a directory and everything in it."`
}

// maxWriteBytes caps one write's decoded content.
const maxWriteBytes = 32 << 20

func fileOperation() Def {
	return New(Def{
		Name: "file_operation",
		Description: "Read, write, list and delete files in the sandbox. Relative paths are relative to the " +
			"workspace, which python_executor and shell_executor use as their working directory, so files " +
			"written here are visible to code run there. The rest of the file system is read-only. " +
			"Use encoding base64 for binary files.",
		Sandbox:     sandbox.TypeDocker,
		Destructive: true,
	}, runFile)
}

func runFile(ctx context.Context, call Call, p FileParams) (Result, error) {
	const tool = "file_operation"
	encoding := strings.ToLower(p.Encoding)
	switch encoding {
	case "", "utf-8", "utf8":
		encoding = "utf-8"
	case "base64":
	default:
		return Result{}, argErrorf(tool, "encoding %q is not supported; use utf-8 or base64", p.Encoding)
	}
	if p.FilePath == "" {
		return Result{}, argErrorf(tool, "file_path must not be empty")
	}
	if strings.ContainsRune(p.FilePath, 0) {
		return Result{}, argErrorf(tool, "file_path must not contain a NUL byte")
	}
	req := sandbox.FileRequest{Path: p.FilePath}
	switch p.Operation {
	case "read":
		req.Action = sandbox.FileRead
	case "write", "create":
		if p.Operation == "write" && p.Content == nil {
			return Result{}, argErrorf(tool, "operation write needs content (use create for an empty file)")
		}
		data, err := decodeContent(p.Content, encoding)
		if err != nil {
			return Result{}, err
		}
		req.Action, req.Data = sandbox.FileWrite, data
	case "delete":
		req.Action, req.Recursive = sandbox.FileDelete, p.Recursive
	case "list":
		req.Action = sandbox.FileList
	case "exists":
		req.Action = sandbox.FileExists
	case "mkdir":
		req.Action = sandbox.FileMkdir
	case "stat":
		req.Action = sandbox.FileStat
	default:
		return Result{}, argErrorf(tool, "operation %q is not one of create, read, write, delete, list, exists, mkdir, stat", p.Operation)
	}
	r, err := call.Sandbox.File(ctx, req)
	if err != nil {
		return fromSandboxError(err)
	}
	res := Result{Status: StatusSuccess, Metadata: map[string]any{"path": r.Path, "operation": p.Operation}}
	switch p.Operation {
	case "read":
		if encoding == "base64" {
			res.Output = base64.StdEncoding.EncodeToString(r.Data)
		} else if !utf8.Valid(r.Data) {
			return failure(fmt.Sprintf("%s is not UTF-8 text; read it with encoding base64", r.Path)), nil
		} else {
			res.Output = string(r.Data)
		}
		res.Metadata["size"] = len(r.Data)
		if r.Truncated {
			res.Truncated = true
			res.Error = fmt.Sprintf("[read stopped after %d bytes]", len(r.Data))
		}
	case "write", "create":
		res.Output = fmt.Sprintf("wrote %d bytes to %s", len(req.Data), r.Path)
	case "delete":
		res.Output = "deleted " + r.Path
	case "list":
		var b strings.Builder
		for _, e := range r.Entries {
			b.WriteString(e.Name)
			if e.IsDir {
				b.WriteByte('/')
			}
			b.WriteByte('\n')
		}
		res.Output = b.String()
		res.Metadata["entries"] = r.Entries
		if r.Truncated {
			res.Truncated = true
			res.Error = fmt.Sprintf("[listing stopped after %d entries; list a subdirectory, or use shell_executor with find or ls]", len(r.Entries))
		}
	case "exists":
		res.Output = "does not exist"
		if r.Exists {
			res.Output = "exists"
		}
		res.Metadata["exists"] = r.Exists
	case "mkdir":
		res.Output = "created directory " + r.Path
	case "stat":
		if r.Info != nil {
			kind := "file"
			if r.Info.IsDir {
				kind = "directory"
			} else if r.Info.Link != "" {
				kind = "symlink to " + r.Info.Link
			}
			res.Output = fmt.Sprintf("%s: %s, %d bytes, %s, modified %s", r.Path, kind, r.Info.Size, r.Info.Mode, r.Info.ModTime.UTC().Format("2006-01-02T15:04:05Z"))
			res.Metadata["info"] = r.Info
		}
	}
	return res, nil
}

func decodeContent(content *string, encoding string) ([]byte, error) {
	if content == nil {
		return nil, nil
	}
	var data []byte
	if encoding == "base64" {
		d, err := base64.StdEncoding.DecodeString(*content)
		if err != nil {
			return nil, argErrorf("file_operation", "content is not valid base64: %v", err)
		}
		data = d
	} else {
		data = []byte(*content)
	}
	if len(data) > maxWriteBytes {
		return nil, argErrorf("file_operation", "content is %d bytes; one write takes at most %d MiB", len(data), maxWriteBytes>>20)
	}
	return data, nil
}
