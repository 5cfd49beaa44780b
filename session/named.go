package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Named sessions are sandbox_runtime's sessions: a client names one, gives it a workspace
// size, puts files in it, runs allowed commands and code, reads its status and deletes it.
// Each is one docker sandbox made through the Manager (so the operator's policy, caps and
// per-owner limits apply, counted against the caller's principal), whose workspace tmpfs is
// the session's size: a write past it fails inside the sandbox with ENOSPC. Names are the
// client's and scoped to its principal, so two principals may use the same name. A session
// ends when deleted, after IdleTimeout without use (never while a command runs), or when
// its sandbox goes (the Manager's own limits, a REST delete by the same principal).

// Defaults of NamedConfig.
const (
	// DefaultSessionSize is a session's workspace when the create names no size.
	DefaultSessionSize = 50 << 20
	// DefaultMaxSessionSize is the largest size a create may ask for.
	DefaultMaxSessionSize = 1 << 30
	// MinSessionSize is the smallest: below it a session could not hold a script.
	MinSessionSize = 1 << 20
	// DefaultSessionIdle is sandbox_runtime's idle timeout (3600 s).
	DefaultSessionIdle = time.Hour
)

// DefaultAllowedCommands are the programs Execute runs unless the operator lists others:
// file and text utilities that take data, never a program to run. Left out on purpose, as
// each is a way to run anything: shells and interpreters (sh, bash, python3, perl, ...),
// programs that run other programs (env, xargs, nice, nohup, timeout, stdbuf, setsid,
// flock, chroot), find (-exec), awk (system()), sed (GNU's e command), sort
// (--compress-program), split (--filter), tar (--to-command, -I), git (hooks, aliases),
// pagers and editors (! escapes); and ln, whose links lead out of the workspace.
func DefaultAllowedCommands() []string {
	return []string{
		"base64", "basename", "cat", "cmp", "comm", "cp", "cut", "date", "df", "diff", "dirname", "du",
		"echo", "expand", "false", "file", "fold", "grep", "head", "id", "ls", "md5sum", "mkdir", "mv",
		"nl", "od", "paste", "printf", "pwd", "readlink", "realpath", "rm", "rmdir", "seq", "sha1sum",
		"sha256sum", "sha512sum", "sleep", "stat", "tac", "tail", "tee", "touch", "tr", "true", "truncate",
		"uname", "uniq", "unexpand", "wc", "whoami",
	}
}

// escapeHatches are programs that can run any other program; an allow-list that names one
// is allowed (the operator decides) but warned about at start.
var escapeHatches = []string{
	"awk", "bash", "busybox", "chroot", "csh", "dash", "env", "find", "flock", "gawk", "git", "ksh", "less",
	"lua", "mawk", "more", "nice", "node", "nohup", "perl", "php", "python", "python3", "ruby", "script",
	"sed", "setsid", "sh", "sort", "split", "ssh", "stdbuf", "tar", "time", "timeout", "vi", "vim",
	"watch", "xargs", "zsh",
}

// ScriptType says how ExecuteCode runs code of one kind: the code is saved to a file with
// Extension, and Argv runs it, "{file}" standing for the file's path (whole or inside an
// item). A compiled language fits too, through a program of the image that compiles and
// runs (e.g. ["sh", "-c", "cc -o /tmp/a \"$0\" && /tmp/a", "{file}"]: the path is $0,
// never spliced into the shell text).
type ScriptType struct {
	Extension string   `json:"extension"`
	Argv      []string `json:"argv"`
}

// DefaultScriptTypes are python (python3), bash and sh.
func DefaultScriptTypes() map[string]ScriptType {
	return map[string]ScriptType{
		"python": {Extension: ".py", Argv: []string{"python3", "{file}"}},
		"bash":   {Extension: ".sh", Argv: []string{"bash", "{file}"}},
		"sh":     {Extension: ".sh", Argv: []string{"sh", "{file}"}},
	}
}

// defaultScriptType is the type of code that names none and whose file name says nothing.
const defaultScriptType = "python"

// NamedConfig is the operator's word on named sessions. Zero fields take the defaults.
type NamedConfig struct {
	// DefaultSize is a session's workspace size when the create names none; MaxSize the
	// largest a create may ask for (a larger one is refused, naming the limit).
	DefaultSize, MaxSize int64
	// IdleTimeout ends a session unused for this long (no command running).
	IdleTimeout time.Duration
	// AllowedCommands are the program names Execute runs (DefaultAllowedCommands when nil).
	AllowedCommands []string
	// ScriptTypes are ExecuteCode's script types by name (DefaultScriptTypes when nil).
	ScriptTypes map[string]ScriptType
	// Languages are the multi_code_executor languages ExecuteCode also takes as a script
	// type (names or aliases, as tools.LanguageByName reads them; kept as the languages'
	// names): nil means all of them, empty none. A script type of the same name wins. The
	// sandbox is the boundary, and python runs anyway, so a language adds no privilege;
	// only the toolchains of the session's image run.
	Languages []string
	// Image is the sessions' image; empty means the docker sandboxes' default config's.
	Image string
}

var (
	sessionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	scriptNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_+.-]{0,31}$`)
)

// WithDefaults fills cfg's zero fields and checks it.
func (cfg NamedConfig) WithDefaults() (NamedConfig, error) {
	if cfg.DefaultSize == 0 {
		cfg.DefaultSize = DefaultSessionSize
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSessionSize
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultSessionIdle
	}
	if cfg.AllowedCommands == nil {
		cfg.AllowedCommands = DefaultAllowedCommands()
	}
	if cfg.ScriptTypes == nil {
		cfg.ScriptTypes = DefaultScriptTypes()
	}
	switch {
	case cfg.DefaultSize < MinSessionSize || cfg.MaxSize < MinSessionSize:
		return cfg, fmt.Errorf("sessions: default size %s and max size %s must be at least %s",
			formatSize(cfg.DefaultSize), formatSize(cfg.MaxSize), formatSize(MinSessionSize))
	case cfg.DefaultSize > cfg.MaxSize:
		return cfg, fmt.Errorf("sessions: default size %s is over the max size %s", formatSize(cfg.DefaultSize), formatSize(cfg.MaxSize))
	case cfg.IdleTimeout < 0:
		return cfg, fmt.Errorf("sessions: idle timeout %s: want a positive duration", cfg.IdleTimeout)
	}
	for _, name := range cfg.AllowedCommands {
		if name == "" || strings.ContainsAny(name, "/ \t\n\x00") {
			return cfg, fmt.Errorf("sessions: allowed command %q: want a program name without a path, looked up in the sandbox's PATH", name)
		}
	}
	langs, err := languageNames(cfg.Languages)
	if err != nil {
		return cfg, err
	}
	cfg.Languages = langs
	for _, name := range slices.Sorted(maps.Keys(cfg.ScriptTypes)) {
		st := cfg.ScriptTypes[name]
		switch {
		case !scriptNameRE.MatchString(name):
			return cfg, fmt.Errorf("sessions: script type %q: want a lower-case name such as python or cpp", name)
		case !strings.HasPrefix(st.Extension, ".") || strings.ContainsAny(st.Extension, "/\x00"):
			return cfg, fmt.Errorf("sessions: script type %s: extension %q must start with a dot, e.g. \".py\"", name, st.Extension)
		case len(st.Argv) == 0 || st.Argv[0] == "":
			return cfg, fmt.Errorf("sessions: script type %s: argv is empty", name)
		case !slices.ContainsFunc(st.Argv, func(a string) bool { return strings.Contains(a, "{file}") }):
			return cfg, fmt.Errorf("sessions: script type %s: argv %q never names the code's file: put \"{file}\" where its path goes", name, st.Argv)
		}
	}
	return cfg, nil
}

// languageNames reads the operator's languages: nil is every multi_code_executor language;
// each name or alias becomes the language's name, once, in the order given.
func languageNames(names []string) ([]string, error) {
	if names == nil {
		var all []string
		for _, l := range tools.Languages() {
			all = append(all, l.Name)
		}
		return all, nil
	}
	out := make([]string, 0, len(names)) // empty stays empty: no language
	for _, name := range names {
		l, ok := tools.LanguageByName(name)
		if !ok {
			return nil, fmt.Errorf("sessions: language %q is not one of multi_code_executor's: %s", name, strings.Join(tools.LanguageNames(), ", "))
		}
		if !slices.Contains(out, l.Name) {
			out = append(out, l.Name)
		}
	}
	return out, nil
}

// Named serves named sessions on a Core's manager.
type Named struct {
	core    *Core
	cfg     NamedConfig
	allowed map[string]bool
	langs   map[string]bool // the languages ExecuteCode takes, by name
	log     *slog.Logger

	mu       sync.Mutex
	sessions map[namedKey]*named
	closed   bool

	stop chan struct{}
	done chan struct{}
}

type namedKey struct{ owner, name string }

// named is one session. sb and err are set once, before ready closes.
type named struct {
	key     namedKey
	size    int64
	created time.Time
	ready   chan struct{}
	sb      sandbox.Sandbox
	err     error

	mu         sync.Mutex
	lastActive time.Time
	busy       int // calls under way, commands included
	running    map[uint64]api.SessionProcess
	seq        uint64
}

// NewNamed serves named sessions with core's manager, tools' options and limits. It starts
// the idle clock's goroutine; Close stops it and ends every session.
func NewNamed(core *Core, cfg NamedConfig) (*Named, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	n := &Named{
		core: core, cfg: cfg, allowed: map[string]bool{}, langs: map[string]bool{}, log: core.log.With("face", "sessions"),
		sessions: map[namedKey]*named{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, name := range cfg.AllowedCommands {
		n.allowed[name] = true
	}
	for _, name := range cfg.Languages {
		n.langs[name] = true
	}
	if risky := slices.DeleteFunc(slices.Clone(cfg.AllowedCommands), func(c string) bool { return !slices.Contains(escapeHatches, c) }); len(risky) > 0 {
		n.log.Warn("the sessions' allowed commands include programs that can run any other program: execute is then as open as execute_code",
			"commands", risky)
	}
	if mem, err := sandbox.Resolve(n.sandboxConfig(cfg.MaxSize), core.m.Policy()); err == nil && cfg.MaxSize > mem.MemoryBytes {
		n.log.Warn("a session's workspace is memory (tmpfs) and counts against its memory limit: the largest session size is more than that limit",
			"max_size", formatSize(cfg.MaxSize), "memory_limit", formatSize(mem.MemoryBytes))
	}
	go n.janitor()
	return n, nil
}

// Config is the configuration in force, defaults filled in.
func (n *Named) Config() NamedConfig { return n.cfg }

// sandboxConfig is a session's sandbox config: the operator's docker config with the
// session's size as its workspace.
func (n *Named) sandboxConfig(size int64) sandbox.Config {
	cfg := n.core.m.DefaultConfig(sandbox.TypeDocker)
	cfg.WorkspaceSize = strconv.FormatInt(size, 10)
	if n.cfg.Image != "" {
		cfg.Image = n.cfg.Image
	}
	return cfg
}

// parseSize reads a create's size: empty is the default; a size under the minimum or over
// the operator's maximum is refused, naming the limit.
func (n *Named) parseSize(size string) (int64, error) {
	if strings.TrimSpace(size) == "" {
		return n.cfg.DefaultSize, nil
	}
	b, err := sandbox.ParseSize(size)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	switch {
	case b < MinSessionSize:
		return 0, fmt.Errorf("%w: size %q is under the %s minimum", api.ErrBadRequest, size, formatSize(MinSessionSize))
	case b > n.cfg.MaxSize:
		return 0, fmt.Errorf("%w: size %q is over the operator's maximum session size of %s", api.ErrPolicy, size, formatSize(n.cfg.MaxSize))
	}
	return b, nil
}

// checkName refuses a session name that is not a safe path segment.
func checkName(name string) error {
	if !sessionNameRE.MatchString(name) {
		return fmt.Errorf("%w: session id %s: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
			api.ErrBadRequest, strconv.Quote(cut(name, 200)))
	}
	return nil
}

// Create makes owner's session name with a workspace of size ("" means the default).
func (n *Named) Create(ctx context.Context, owner, name, size string) (api.SessionInfo, error) {
	if err := checkName(name); err != nil {
		return api.SessionInfo{}, err
	}
	bytes, err := n.parseSize(size)
	if err != nil {
		return api.SessionInfo{}, err
	}
	key := namedKey{owner, name}
	now := time.Now()
	s := &named{key: key, size: bytes, created: now, lastActive: now, ready: make(chan struct{}), running: map[uint64]api.SessionProcess{}}
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return api.SessionInfo{}, sandbox.ErrManagerClosed
	case n.sessions[key] != nil:
		n.mu.Unlock()
		return api.SessionInfo{}, fmt.Errorf("%w: session %q: delete it first, or use another id", api.ErrExists, name)
	}
	n.sessions[key] = s
	n.mu.Unlock()

	sb, err := n.core.m.Create(ctx, owner, sandbox.TypeDocker, n.sandboxConfig(bytes))
	if err != nil {
		s.err = err
		n.forget(s)
		close(s.ready)
		return api.SessionInfo{}, fmt.Errorf("creating session %q: %w", name, err)
	}
	s.sb = sb
	close(s.ready)
	n.log.Info("session created", "owner", owner, "session", name, "size", formatSize(bytes), "sandbox", sb.ID())
	return n.info(s), nil
}

// info describes s.
func (n *Named) info(s *named) api.SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return api.SessionInfo{
		SessionID: s.key.name, Size: formatSize(s.size), SizeBytes: s.size,
		CreatedAt: s.created.UTC(), LastActive: s.lastActive.UTC(), IdleTimeout: n.cfg.IdleTimeout.Seconds(),
	}
}

// forget drops s from the index, if it is still the session under its key.
func (n *Named) forget(s *named) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sessions[s.key] == s {
		delete(n.sessions, s.key)
	}
}

// get finds owner's session name once its creation has finished. A session whose sandbox
// the manager no longer has (removed by its own limits, or through the REST API) is gone.
func (n *Named) get(ctx context.Context, owner, name string) (*named, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	n.mu.Lock()
	s := n.sessions[namedKey{owner, name}]
	n.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("session %q: %w: create it first", name, api.ErrNotFound)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.err != nil {
		return nil, fmt.Errorf("session %q: %w: its creation failed", name, api.ErrNotFound)
	}
	if _, err := n.core.m.GetOwned(owner, s.sb.ID()); err != nil {
		n.forget(s)
		return nil, fmt.Errorf("session %q: %w: it ended (its sandbox was removed)", name, api.ErrNotFound)
	}
	return s, nil
}

// begin finds a session for a call and marks it in use until the returned func runs: the
// idle clock never ends a session under a call.
func (n *Named) begin(ctx context.Context, owner, name string) (*named, func(), error) {
	s, err := n.get(ctx, owner, name)
	if err != nil {
		return nil, nil, err
	}
	if err := runnable(s.sb.Info(), "delete the session and create it again"); err != nil {
		return nil, nil, fmt.Errorf("session %q: %w", name, err)
	}
	s.mu.Lock()
	s.busy++
	s.lastActive = time.Now()
	s.mu.Unlock()
	return s, func() {
		s.mu.Lock()
		s.busy--
		s.lastActive = time.Now()
		s.mu.Unlock()
	}, nil
}

// Delete ends owner's session name and removes its sandbox; a command running in it is
// killed.
func (n *Named) Delete(ctx context.Context, owner, name string) error {
	s, err := n.get(ctx, owner, name)
	if err != nil {
		return err
	}
	return n.end(ctx, s, "deleted")
}

// end drops s and removes its sandbox.
func (n *Named) end(ctx context.Context, s *named, why string) error {
	n.forget(s)
	err := n.core.m.DeleteOwned(ctx, s.key.owner, s.sb.ID())
	if errors.Is(err, api.ErrNotFound) {
		err = nil
	}
	n.log.Info("session ended", "owner", s.key.owner, "session", s.key.name, "why", why, "error", err)
	return err
}

// CleanupAll ends every session of owner's; without force, those running a command are
// left, and listed as skipped.
func (n *Named) CleanupAll(ctx context.Context, owner string, force bool) (api.CleanupResult, error) {
	out := api.CleanupResult{Cleaned: []string{}, Skipped: []string{}}
	var ending []*named
	for _, s := range n.owned(owner) {
		select {
		case <-s.ready:
		case <-ctx.Done():
			return out, ctx.Err()
		}
		if s.err != nil {
			continue
		}
		s.mu.Lock()
		running := len(s.running)
		s.mu.Unlock()
		if running > 0 && !force {
			out.Skipped = append(out.Skipped, s.key.name)
			continue
		}
		ending = append(ending, s)
	}
	// All at once, in name order in the result: the manager bounds the removals under way.
	errs := n.endAll(ctx, ending, "cleanup-all")
	for i, s := range ending {
		if errs[i] != nil {
			errs[i] = fmt.Errorf("session %q: %w", s.key.name, errs[i])
			continue
		}
		out.Cleaned = append(out.Cleaned, s.key.name)
	}
	return out, errors.Join(errs...)
}

// endAll ends every session of all concurrently; the manager runs at most
// sandbox.RemoveWorkers removals at a time. The errors are in all's order.
func (n *Named) endAll(ctx context.Context, all []*named, why string) []error {
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, s := range all {
		wg.Go(func() { errs[i] = n.end(ctx, s, why) })
	}
	wg.Wait()
	return errs
}

// owned lists owner's sessions by name.
func (n *Named) owned(owner string) []*named {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*named
	for key, s := range n.sessions {
		if key.owner == owner {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *named) int { return strings.Compare(a.key.name, b.key.name) })
	return out
}

// List describes owner's sessions, by name.
func (n *Named) List(owner string) []api.SessionInfo {
	out := []api.SessionInfo{}
	for _, s := range n.owned(owner) {
		select {
		case <-s.ready:
			if s.err == nil {
				out = append(out, n.info(s))
			}
		default: // still being created
		}
	}
	return out
}

// janitor ends sessions idle past the timeout.
func (n *Named) janitor() {
	defer close(n.done)
	tick := time.NewTicker(min(max(n.cfg.IdleTimeout/4, 50*time.Millisecond), time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-tick.C:
			for _, s := range n.idle(now) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := n.end(ctx, s, "idle"); err != nil {
					n.log.Warn("ending an idle session", "owner", s.key.owner, "session", s.key.name, "error", err)
				}
				cancel()
			}
		}
	}
}

// idle lists the sessions unused for longer than the timeout, none busy.
func (n *Named) idle(now time.Time) []*named {
	n.mu.Lock()
	all := slices.Collect(maps.Values(n.sessions))
	n.mu.Unlock()
	var out []*named
	for _, s := range all {
		select {
		case <-s.ready:
		default:
			continue
		}
		s.mu.Lock()
		expired := s.err == nil && s.busy == 0 && now.Sub(s.lastActive) > n.cfg.IdleTimeout
		s.mu.Unlock()
		if expired {
			out = append(out, s)
		}
	}
	return out
}

// Close stops the idle clock and ends every session.
func (n *Named) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	all := slices.Collect(maps.Values(n.sessions))
	n.mu.Unlock()
	close(n.stop)
	<-n.done
	var ending []*named
	for _, s := range all {
		<-s.ready
		if s.err == nil {
			ending = append(ending, s)
		}
	}
	return errors.Join(n.endAll(ctx, ending, "shutdown")...)
}

// formatSize writes a byte count as sandbox_runtime spells sizes ("50M", "1G").
func formatSize(n int64) string { return strings.ToUpper(sizeString(n)) }

// cut shortens a client's text for an error message.
func cut(s string, limit int) string {
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
