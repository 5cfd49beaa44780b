package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// The session API's wire types, from package api.
type (
	// SessionInfo describes a named session.
	SessionInfo = api.SessionInfo
	// SessionFile is one entry of a session's workspace.
	SessionFile = api.SessionFile
	// SessionFiles is a session's listing.
	SessionFiles = api.SessionFiles
	// SessionStatus is a session's size limit and use, files, clock and running commands.
	SessionStatus = api.SessionStatus
	// SessionProcess is a command running in a session.
	SessionProcess = api.SessionProcess
	// CommandResult is the outcome of a command or of code run in a session.
	CommandResult = api.CommandResult
	// CleanupResult lists the sessions CleanupAll ended and those it left.
	CleanupResult = api.CleanupResult
)

// More errors callers branch on with errors.Is.
var (
	// ErrExists: a session of that id exists already.
	ErrExists = api.ErrExists
	// ErrNoSpace: the session is full; remove files to make room.
	ErrNoSpace = api.ErrNoSpace
)

// CodeExists is the code of ErrExists.
const CodeExists = api.CodeExists

// SessionsConfig configures a Sessions client.
type SessionsConfig struct {
	// Servers are the base URLs of the servers sessions are spread over, e.g.
	// http://10.0.0.1:8000. Every client of the same sessions must list the same URLs
	// (their order does not matter): a session's server is picked from its id and the URLs.
	Servers []string
	// Token is sent as "Authorization: Bearer <token>" to every server; sessions belong to
	// the token's principal.
	Token string
	// HTTPClient sends the requests; nil means a client without an overall timeout (code
	// may run for an hour). Bound calls with their contexts.
	HTTPClient *http.Client
}

// Sessions is the Go SDK of the session API (sandbox_runtime's /workspace/se/* paths) over
// any number of servers. A session lives on the server that rendezvous (highest random
// weight) hashing of its id picks among Servers, so any number of clients find the same
// session with no shared store, and adding or removing a server moves only the sessions
// that hash to it. Errors name the server they came from.
type Sessions struct {
	servers []*Remote
	names   []string // each server's URL, as hashed
}

// NewSessions returns a client of the session API on cfg.Servers.
func NewSessions(cfg SessionsConfig) (*Sessions, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("client.NewSessions: at least one server is required")
	}
	s := &Sessions{}
	seen := map[string]bool{}
	for _, raw := range cfg.Servers {
		r, err := NewRemote(RemoteConfig{BaseURL: raw, Token: cfg.Token, HTTPClient: cfg.HTTPClient})
		if err != nil {
			return nil, fmt.Errorf("client.NewSessions: %w", err)
		}
		name := r.base.String()
		if seen[name] {
			return nil, fmt.Errorf("client.NewSessions: server %s is listed twice", name)
		}
		seen[name] = true
		s.servers, s.names = append(s.servers, r), append(s.names, name)
	}
	return s, nil
}

// Servers are the servers' URLs, as given (normalised).
func (s *Sessions) Servers() []string { return append([]string(nil), s.names...) }

// Server is the URL of the server that holds session id: the one whose hash of (URL, id)
// is highest.
func (s *Sessions) Server(id string) string { return s.names[s.pick(id)] }

func (s *Sessions) pick(id string) int {
	best, bestScore := 0, uint64(0)
	for i, name := range s.names {
		sum := sha256.Sum256([]byte(name + "\x00" + id))
		if score := binary.BigEndian.Uint64(sum[:8]); i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// ServerError is a failure of one server: an error answer (an *APIError inside) or a
// server that could not be reached. Server is its URL.
type ServerError struct {
	Server string
	Err    error
}

func (e *ServerError) Error() string {
	var apiErr *APIError
	if errors.As(e.Err, &apiErr) {
		return "server " + e.Server + ": " + e.Err.Error()
	}
	return "server " + e.Server + " is unreachable or failed: " + e.Err.Error()
}

// Unwrap returns the underlying error: errors.Is(err, ErrNotFound) and errors.As(err,
// **APIError) see through it.
func (e *ServerError) Unwrap() error { return e.Err }

// on runs call against the server of session id, naming it in any error.
func (s *Sessions) on(id string, call func(r *Remote) error) error {
	i := s.pick(id)
	if err := call(s.servers[i]); err != nil {
		return &ServerError{Server: s.names[i], Err: err}
	}
	return nil
}

func sessionPath(op, id string, rest ...string) string {
	p := "/workspace/se/" + op + "/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// jsonCall sends a JSON body (nil: none) and decodes the answer into out.
func jsonCall(ctx context.Context, r *Remote, method, path string, body, out any) error {
	req := request{method: method, path: path}
	if body != nil {
		b, err := jsonBody(body)
		if err != nil {
			return err
		}
		req.body, req.contentType = b, "application/json"
	}
	return r.call(ctx, req, out)
}

// Create makes session id with a workspace of size ("50M"; "" for the server's default).
// An id in use is ErrExists; a size over the server's maximum is ErrPolicy.
func (s *Sessions) Create(ctx context.Context, id, size string) (SessionInfo, error) {
	var info SessionInfo
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodPost, sessionPath("session", id), api.CreateSessionRequest{Size: size}, &info)
	})
	return info, err
}

// Delete ends session id and removes its sandbox.
func (s *Sessions) Delete(ctx context.Context, id string) error {
	return s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodDelete, sessionPath("session", id), nil, nil)
	})
}

// CreateFile writes content to filename (relative to the workspace) in session id, with
// mode's permission bits (0: 0644). A session without room is ErrNoSpace.
func (s *Sessions) CreateFile(ctx context.Context, id, filename string, content []byte, mode uint32) (SessionFile, error) {
	req := api.CreateFileRequest{Filename: filename, Content: string(content)}
	if !isText(content) {
		req.Content, req.Encoding = base64Text(content), "base64"
	}
	if mode != 0 {
		req.Mode = fmt.Sprintf("%04o", mode)
	}
	var f SessionFile
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodPost, sessionPath("create", id), req, &f)
	})
	return f, err
}

// Files lists session id's workspace.
func (s *Sessions) Files(ctx context.Context, id string) (SessionFiles, error) {
	var out SessionFiles
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodGet, sessionPath("files", id), nil, &out)
	})
	return out, err
}

// Upload sends content as filename into session id, as a multipart upload.
func (s *Sessions) Upload(ctx context.Context, id, filename string, content io.Reader) (SessionFile, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("filename", filename); err != nil {
		return SessionFile{}, err
	}
	part, err := mw.CreateFormFile("file", lastElem(filename))
	if err != nil {
		return SessionFile{}, err
	}
	if _, err := io.Copy(part, content); err != nil {
		return SessionFile{}, fmt.Errorf("reading the upload: %w", err)
	}
	if err := mw.Close(); err != nil {
		return SessionFile{}, err
	}
	var f SessionFile
	err = s.on(id, func(r *Remote) error {
		return r.call(ctx, request{method: http.MethodPost, path: sessionPath("upload", id),
			body: bytes.NewReader(buf.Bytes()), contentType: mw.FormDataContentType()}, &f)
	})
	return f, err
}

// Download writes filename's bytes from session id to w and returns how many it wrote.
func (s *Sessions) Download(ctx context.Context, id, filename string, w io.Writer) (int64, error) {
	var n int64
	err := s.on(id, func(r *Remote) error {
		resp, err := r.do(ctx, request{method: http.MethodGet, path: sessionPath("download", id, escapePath(filename))})
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if n, err = io.Copy(w, resp.Body); err != nil {
			return fmt.Errorf("reading the download: %w", err)
		}
		return nil
	})
	return n, err
}

// Execute runs command (a program from the server's allow-list) with args and no shell in
// session id; timeout 0 means the server's default. A command outside the allow-list is
// ErrPolicy, whose message lists the allowed ones; a command that ran is a result, whatever
// its exit.
func (s *Sessions) Execute(ctx context.Context, id, command string, args []string, timeout time.Duration) (CommandResult, error) {
	var res CommandResult
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodPost, sessionPath("execute", id),
			api.ExecuteRequest{Command: command, Args: args, Timeout: timeout.Seconds()}, &res)
	})
	return res, err
}

// ExecuteCode runs code as scriptType ("python", "bash", "sh", or what the server adds; ""
// takes it from filename's extension, else python). With a filename the code is kept in the
// workspace under it.
func (s *Sessions) ExecuteCode(ctx context.Context, id, code, filename, scriptType string, timeout time.Duration) (CommandResult, error) {
	var res CommandResult
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodPost, sessionPath("execute_code", id),
			api.ExecuteCodeRequest{Code: code, Filename: filename, ScriptType: scriptType, Timeout: timeout.Seconds()}, &res)
	})
	return res, err
}

// Status describes session id: its size limit and use, files, clock and running commands.
func (s *Sessions) Status(ctx context.Context, id string) (SessionStatus, error) {
	var st SessionStatus
	err := s.on(id, func(r *Remote) error {
		return jsonCall(ctx, r, http.MethodGet, sessionPath("status", id), nil, &st)
	})
	return st, err
}

// CleanupAll ends the token's sessions on every server; with force, those running a
// command too. It asks every server, and reports each that failed.
func (s *Sessions) CleanupAll(ctx context.Context, force bool) (CleanupResult, error) {
	out := CleanupResult{Cleaned: []string{}, Skipped: []string{}}
	var errs []error
	for i, r := range s.servers {
		var res CleanupResult
		err := jsonCall(ctx, r, http.MethodPost, "/workspace/se/cleanup-all", map[string]bool{"force": force}, &res)
		if err != nil {
			errs = append(errs, &ServerError{Server: s.names[i], Err: err})
			continue
		}
		out.Cleaned = append(out.Cleaned, res.Cleaned...)
		out.Skipped = append(out.Skipped, res.Skipped...)
	}
	return out, errors.Join(errs...)
}

// Healthy asks each server whether it is healthy, by URL; an unreachable one is false.
func (s *Sessions) Healthy(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	for i, r := range s.servers {
		var h struct {
			Healthy bool `json:"healthy"`
		}
		err := r.call(ctx, request{method: http.MethodGet, path: "/workspace/se/healthy", ok: []int{http.StatusServiceUnavailable}}, &h)
		out[s.names[i]] = err == nil && h.Healthy
	}
	return out
}

// escapePath escapes each element of a slash-separated name.
func escapePath(name string) string {
	elems := strings.Split(name, "/")
	for i, e := range elems {
		elems[i] = url.PathEscape(e)
	}
	return strings.Join(elems, "/")
}

func lastElem(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// isText reports whether content travels as JSON text as it is: valid UTF-8 without NUL.
func isText(content []byte) bool {
	return utf8.Valid(content) && bytes.IndexByte(content, 0) < 0
}

func base64Text(content []byte) string { return base64.StdEncoding.EncodeToString(content) }
