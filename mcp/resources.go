package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// The workspace of the session's own sandbox as MCP resources: one template for its files,
// resources/list listing them, resources/read reading one, and links to files a tool call
// wrote in its result. A session sees only its own sandbox (the owner is the MCP session,
// as for tool calls), and neither listing nor reading starts a sandbox. A caller without a
// session (stateless.go) sees the workspaces of its open sandbox handles the same way,
// each under its handle: sandbox://sandboxes/<handle>/<path>.
//
// The URIs are sandbox://workspace/<path>, the path relative to the workspace with each
// segment percent-encoded. Not file:// URIs: those name files on the client's machine, and a
// client that resolved one itself would read the user's own file of that name instead of
// asking this server. A scheme of our own can only be read through the server that listed it.

const (
	// WorkspaceURIPrefix starts every workspace file's URI; the rest is its path in the
	// workspace.
	WorkspaceURIPrefix = "sandbox://workspace/"
	workspaceTemplate  = WorkspaceURIPrefix + "{+path}"
	// HandleURIPrefix starts the URI of a file in a stateless caller's sandbox; the rest is
	// the sandbox's handle, a slash, and the file's path in its workspace.
	HandleURIPrefix = "sandbox://sandboxes/"
	handleTemplate  = HandleURIPrefix + "{sandbox}/{+path}"

	// DefaultMaxResourceBytes caps a file read as a resource when Config names no cap: a
	// response stays a few MiB of JSON (base64 grows binary by a third).
	DefaultMaxResourceBytes = 8 << 20
	// maxListedFiles and maxListedDirs bound resources/list: the walk stops at that many
	// files or directories, breadth first (the workspace's top level comes first), and the
	// result's _meta says it stopped. Any file can still be read by its URI.
	maxListedFiles = 500
	maxListedDirs  = 100
	// listTimeout bounds the walk of one resources/list.
	listTimeout = 20 * time.Second
	// truncatedMeta is the _meta key of a listing that stopped early.
	truncatedMeta = "enclave-mcp/truncated"
)

const templateDescription = "A file in this session's sandbox workspace (the directory every tool runs in), by its " +
	"path there, e.g. sandbox://workspace/plots/loss.png. Text files come back as text, others as base64 blobs, " +
	"with a MIME type from the file name. resources/list lists the workspace's files, without hidden ones " +
	"(names starting with a dot) or symbolic links, breadth first, at most 500; any other file can still be read " +
	"by its URI. Nothing is listed before the session's first tool call starts its sandbox."

const handleTemplateDescription = "A file in the workspace of a sandbox that sandbox_open opened, for clients without an " +
	"MCP session (protocol 2026-07-28, stateless): sandbox://sandboxes/<handle>/<path>, e.g. " +
	"sandbox://sandboxes/<handle>/plots/loss.png. resources/list lists the files of every sandbox the caller's token has " +
	"open, the same way as a session's (without hidden names or symbolic links, at most 500). Only the token that opened " +
	"a sandbox can read its files."

// resourceErrorf is a refusal of a resource request; its text goes to the client as the
// JSON-RPC error's message.
func resourceErrorf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// registerResources adds the workspace template and the listing hook.
func (s *Server) registerResources(hooks *server.Hooks) {
	hooks.AddAfterListResources(func(ctx context.Context, _ any, _ *mcp.ListResourcesRequest, result *mcp.ListResourcesResult) {
		s.listWorkspace(ctx, result)
	})
	// Each caller is shown the template of its own kind of URI: a session's workspace, or
	// its handles' (as with the tools, a session's view is what it always was).
	hooks.AddAfterListResourceTemplates(func(ctx context.Context, _ any, _ *mcp.ListResourceTemplatesRequest, result *mcp.ListResourceTemplatesResult) {
		hide := handleTemplate
		if callerOf(ctx).stateless() {
			hide = workspaceTemplate
		}
		result.ResourceTemplates = slices.DeleteFunc(result.ResourceTemplates, func(t mcp.ResourceTemplate) bool {
			return t.URITemplate != nil && t.URITemplate.Raw() == hide
		})
	})
}

func (s *Server) addResourceTemplate() {
	s.mcp.AddResourceTemplate(mcp.NewResourceTemplate(workspaceTemplate, "workspace",
		mcp.WithTemplateTitle("Sandbox workspace file"),
		mcp.WithTemplateDescription(templateDescription),
	), s.readWorkspace)
	s.mcp.AddResourceTemplate(mcp.NewResourceTemplate(handleTemplate, "sandbox-workspace",
		mcp.WithTemplateTitle("Sandbox workspace file, by sandbox handle"),
		mcp.WithTemplateDescription(handleTemplateDescription),
	), s.readWorkspace)
}

// workspace is one sandbox's workspace as resources: the sandbox, and the prefix of its
// files' URIs (WorkspaceURIPrefix for a session's, the handle's under HandleURIPrefix).
type workspace struct {
	sb     sandbox.Sandbox
	prefix string
}

// uri is the URI of the workspace file at rel.
func (w workspace) uri(rel string) string { return uriUnder(w.prefix, rel) }

// workspaces are the workspaces a caller sees: a session's one sandbox once it has
// started; a stateless caller's open handles.
func (s *Server) workspaces(ctx context.Context) []workspace {
	c := callerOf(ctx)
	if !c.stateless() {
		if sb, ok := s.core.Caller(c.session).Current(); ok {
			return []workspace{{sb: sb, prefix: WorkspaceURIPrefix}}
		}
		return nil
	}
	var out []workspace
	for _, sb := range s.handles.List(c.principal) {
		out = append(out, workspace{sb: sb, prefix: HandleURIPrefix + sb.ID() + "/"})
	}
	return out
}

// workspaceOf finds the workspace a resource URI names, for its caller, and the file's
// path in it; a caller only ever finds its own.
func (s *Server) workspaceOf(ctx context.Context, uri string) (workspace, string, error) {
	c := callerOf(ctx)
	rest, byHandle := strings.CutPrefix(uri, HandleURIPrefix)
	switch {
	case byHandle && !c.stateless():
		return workspace{}, "", resourceErrorf("%s names a sandbox by its handle, which only clients without an MCP session use; "+
			"this session's files are %s<path>", uri, WorkspaceURIPrefix)
	case byHandle:
		id, _, _ := strings.Cut(rest, "/")
		sb, err := s.handles.Sandbox(c.principal, id)
		if err != nil {
			return workspace{}, "", resourceErrorf("%s: %s", uri, handleAdvice(err))
		}
		ws := workspace{sb: sb, prefix: HandleURIPrefix + id + "/"}
		rel, err := pathUnder(uri, ws.prefix)
		return ws, rel, err
	case c.stateless() && strings.HasPrefix(uri, WorkspaceURIPrefix):
		return workspace{}, "", resourceErrorf("%s: this request has no MCP session, so no session workspace; name the file by "+
			"its sandbox handle, %s<handle>/<path>", uri, HandleURIPrefix)
	}
	rel, err := workspacePath(uri)
	if err != nil {
		return workspace{}, "", err
	}
	sb, ok := s.core.Caller(c.session).Current()
	if !ok {
		return workspace{}, "", resourceErrorf("%s: this session has no sandbox yet, so its workspace holds no files "+
			"(the session's first tool call starts its sandbox)", uri)
	}
	return workspace{sb: sb, prefix: WorkspaceURIPrefix}, rel, nil
}

// listWorkspace adds the caller's workspace files to a resources/list result: its session's,
// or those of its open handles. mcp-go lists only resources registered up front; the hook
// runs on its (empty) result before it is sent. A listing that fails part way keeps what
// it found, and is logged.
func (s *Server) listWorkspace(ctx context.Context, result *mcp.ListResourcesResult) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	truncated := false
	for _, ws := range s.workspaces(ctx) {
		left := maxListedFiles - len(result.Resources)
		if left <= 0 {
			truncated = true
			break
		}
		files, cut, err := walkWorkspace(ctx, ws, left, maxListedDirs)
		if err != nil {
			s.log.Warn("listing the workspace as resources", "sandbox", ws.sb.ID(), "error", err)
		}
		result.Resources = append(result.Resources, files...)
		truncated = truncated || cut
	}
	if truncated {
		if result.Meta == nil {
			result.Meta = &mcp.Meta{}
		}
		if result.Meta.AdditionalFields == nil {
			result.Meta.AdditionalFields = map[string]any{}
		}
		result.Meta.AdditionalFields[truncatedMeta] = fmt.Sprintf("the listing stopped at %d files or %d directories "+
			"(breadth first, hidden names and symbolic links left out); read any other file by its URI, %s<path>",
			maxListedFiles, maxListedDirs, WorkspaceURIPrefix)
	}
}

// walkWorkspace lists sb's workspace files breadth first, each directory's entries by name,
// leaving out hidden names (a dot first: caches and tool state such as .cache, .local or
// .ipynb_checkpoints), symbolic links and anything not a regular file. It stops at maxFiles
// files or maxDirs directories, with truncated set.
func walkWorkspace(ctx context.Context, ws workspace, maxFiles, maxDirs int) (files []mcp.Resource, truncated bool, err error) {
	sb := ws.sb
	root := session.WorkingDir(sb)
	queue, dirs := []string{""}, 0
	for len(queue) > 0 {
		if len(files) >= maxFiles || dirs >= maxDirs {
			return files, true, nil
		}
		rel := queue[0]
		queue = queue[1:]
		dirs++
		list, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileList, Path: path.Join(root, rel)})
		if err != nil {
			if rel == "" || ctx.Err() != nil {
				return files, truncated, err
			}
			continue // a directory removed since its parent was listed
		}
		truncated = truncated || list.Truncated
		entries := slices.Clone(list.Entries)
		slices.SortFunc(entries, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
		for _, e := range entries {
			if e.Name == "" || strings.HasPrefix(e.Name, ".") || strings.ContainsAny(e.Name, "/\x00") || e.Link != "" {
				continue
			}
			child := path.Join(rel, e.Name)
			if e.IsDir {
				queue = append(queue, child)
				continue
			}
			if !strings.HasPrefix(e.Mode, "-") {
				continue // sockets, pipes, devices: nothing to read
			}
			if len(files) >= maxFiles {
				return files, true, nil
			}
			files = append(files, fileResource(ws.uri(child), child, e))
		}
	}
	return files, truncated, nil
}

// fileResource describes the workspace file at rel, whose URI is uri.
func fileResource(uri, rel string, e sandbox.FileInfo) mcp.Resource {
	opts := []mcp.ResourceOption{mcp.WithResourceSize(e.Size)}
	if mime := mimeByName(rel); mime != "" {
		opts = append(opts, mcp.WithMIMEType(mime))
	}
	if !e.ModTime.IsZero() {
		opts = append(opts, mcp.WithLastModified(e.ModTime.UTC().Format(time.RFC3339)))
	}
	return mcp.NewResource(uri, rel, opts...)
}

// readWorkspace reads one workspace file of the caller's own sandbox. Refusals are errors
// that say what to do: mcp-go sends them as JSON-RPC errors with the message as given.
func (s *Server) readWorkspace(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	uri := req.Params.URI
	ws, rel, err := s.workspaceOf(ctx, uri)
	if err != nil {
		return nil, err
	}
	sb := ws.sb
	limit := s.cfg.MaxResourceBytes
	p := path.Join(session.WorkingDir(sb), rel)
	st, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileStat, Path: p})
	if err != nil {
		return nil, fileError(uri, err)
	}
	switch info := st.Info; {
	case info == nil:
		return nil, resourceErrorf("%s: the sandbox did not describe the file", uri)
	case info.Link != "":
		return nil, resourceErrorf("%s is a symbolic link (to %s): workspace resources do not follow links; read the file it points to by its own URI", uri, info.Link)
	case info.IsDir:
		return nil, resourceErrorf("%s is a directory: resources are files; resources/list lists them", uri)
	case !strings.HasPrefix(info.Mode, "-"):
		return nil, resourceErrorf("%s is not a regular file (%s)", uri, info.Mode)
	case info.Size > limit:
		return nil, tooLarge(uri, info.Size, limit)
	}
	res, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: p, MaxBytes: limit})
	if err != nil {
		return nil, fileError(uri, err)
	}
	if res.Truncated || int64(len(res.Data)) > limit { // it grew since the stat
		return nil, tooLarge(uri, int64(len(res.Data)), limit)
	}
	return []mcp.ResourceContents{fileContents(uri, rel, res.Data)}, nil
}

// tooLarge is the refusal of a file over the resource size limit.
func tooLarge(uri string, size, limit int64) error {
	return resourceErrorf("%s is %d bytes, larger than the %s limit of resources/read on this server; "+
		"split it in the sandbox (e.g. shell_executor: split -b 4M FILE part.) and read the parts", uri, size, formatBytes(limit))
}

// fileError is a failed file operation as a refusal: the agent's own message (it names the
// path in the sandbox and the reason, e.g. no such file), or the error.
func fileError(uri string, err error) error {
	if ae, ok := errors.AsType[*sandbox.AgentError](err); ok {
		return resourceErrorf("%s: %s", uri, ae.Message)
	}
	return fmt.Errorf("reading %s: %w", uri, err)
}

// fileContents is data as resource contents: text for a text type that is valid UTF-8,
// else a base64 blob. A name with no known type is typed by its content.
func fileContents(uri, name string, data []byte) mcp.ResourceContents {
	mime := mimeByName(name)
	if mime == "" {
		if utf8.Valid(data) && !bytes.ContainsRune(data, 0) {
			mime = "text/plain"
		} else {
			mime, _, _ = strings.Cut(http.DetectContentType(data), ";")
		}
	}
	if textual(mime) && utf8.Valid(data) {
		return mcp.TextResourceContents{URI: uri, MIMEType: mime, Text: string(data)}
	}
	return mcp.BlobResourceContents{URI: uri, MIMEType: mime, Blob: base64.StdEncoding.EncodeToString(data)}
}

// workspaceURI is the URI of the session's workspace file at rel (slash-separated,
// relative).
func workspaceURI(rel string) string { return uriUnder(WorkspaceURIPrefix, rel) }

// uriUnder is the URI of the workspace file at rel under prefix.
func uriUnder(prefix, rel string) string {
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return prefix + strings.Join(parts, "/")
}

// workspacePath reads a session's workspace URI back into a path relative to the
// workspace; see pathUnder.
func workspacePath(uri string) (string, error) { return pathUnder(uri, WorkspaceURIPrefix) }

// pathUnder reads a workspace URI under prefix back into a path relative to the workspace.
// It is refused unless it stays inside the workspace: no "." or ".." segment, no empty
// segment, no encoded slash or NUL; no query or fragment.
func pathUnder(uri, prefix string) (string, error) {
	rest, ok := strings.CutPrefix(uri, prefix)
	if !ok {
		return "", resourceErrorf("%s is not a workspace URI (%s<path>)", uri, prefix)
	}
	if rest == "" {
		return "", resourceErrorf("%s names no file: add its path in the workspace", uri)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", resourceErrorf("%s: a workspace URI has no query or fragment (encode ? as %%3F and # as %%23 in a file name)", uri)
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		seg, err := url.PathUnescape(p)
		switch {
		case err != nil:
			return "", resourceErrorf("%s: bad percent-encoding in %q", uri, p)
		case seg == "" || seg == ".":
			return "", resourceErrorf("%s: empty or \".\" path segment; name the file by its plain path in the workspace", uri)
		case seg == "..":
			return "", resourceErrorf("%s leads outside the workspace: \"..\" is refused; resources are the workspace's own files", uri)
		case strings.ContainsAny(seg, "/\x00"):
			return "", resourceErrorf("%s: a path segment holds an encoded slash or NUL", uri)
		}
		parts[i] = seg
	}
	return strings.Join(parts, "/"), nil
}

// mimeByName is a file's MIME type by its extension, from a fixed table (the system's
// mime.types differs between machines), or "" when the extension is not in it.
func mimeByName(name string) string {
	ext := strings.ToLower(path.Ext(name))
	return mimeTypes[ext]
}

var mimeTypes = map[string]string{
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
	".webp": "image/webp", ".svg": "image/svg+xml", ".bmp": "image/bmp", ".tif": "image/tiff",
	".tiff": "image/tiff", ".ico": "image/vnd.microsoft.icon", ".pdf": "application/pdf",
	".txt": "text/plain", ".log": "text/plain", ".md": "text/markdown", ".rst": "text/x-rst",
	".csv": "text/csv", ".tsv": "text/tab-separated-values", ".html": "text/html", ".htm": "text/html",
	".css": "text/css", ".xml": "application/xml", ".json": "application/json",
	".jsonl": "application/jsonl", ".ndjson": "application/x-ndjson", ".yaml": "application/yaml",
	".yml": "application/yaml", ".toml": "application/toml", ".ini": "text/plain", ".cfg": "text/plain",
	".ipynb": "application/x-ipynb+json", ".py": "text/x-python", ".sh": "application/x-sh",
	".js": "text/javascript", ".mjs": "text/javascript", ".ts": "text/x-typescript", ".go": "text/x-go",
	".c": "text/x-c", ".h": "text/x-c", ".cpp": "text/x-c++", ".rs": "text/x-rust", ".java": "text/x-java",
	".r": "text/x-r", ".sql": "application/sql", ".tex": "application/x-tex",
	".zip": "application/zip", ".gz": "application/gzip", ".tar": "application/x-tar",
	".parquet": "application/vnd.apache.parquet", ".npy": "application/octet-stream",
	".pkl": "application/octet-stream", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".mp4": "video/mp4",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

// textual reports whether a MIME type is text a client can show as such.
func textual(mime string) bool {
	switch {
	case strings.HasPrefix(mime, "text/"), strings.HasSuffix(mime, "+json"), strings.HasSuffix(mime, "+xml"):
		return true
	}
	switch mime {
	case "application/json", "application/jsonl", "application/x-ndjson", "application/xml", "application/yaml",
		"application/toml", "application/x-sh", "application/sql", "application/x-tex":
		return true
	}
	return false
}

// writtenLinks are resource links to the files a successful tool call wrote, when that is
// known without looking: file_operation's write and create, inside the workspace. Files
// that code writes (a plot saved by python_executor or the notebook) are not tracked; they
// are listed by resources/list.
func (s *Server) writtenLinks(c caller, handle, tool string, res tools.Result) []mcp.Content {
	if tool != "file_operation" || !res.OK() {
		return nil
	}
	if op, _ := res.Metadata["operation"].(string); op != "write" && op != "create" {
		return nil
	}
	written, _ := res.Metadata["path"].(string)
	ws := s.callWorkspace(c, handle)
	if written == "" || ws.sb == nil {
		return nil
	}
	rel, ok := strings.CutPrefix(path.Clean(written), strings.TrimSuffix(session.WorkingDir(ws.sb), "/")+"/")
	if !ok || rel == "" {
		return nil
	}
	return []mcp.Content{mcp.NewResourceLink(ws.uri(rel), rel, "the file this call wrote, in the sandbox's workspace", mimeByName(rel))}
}
