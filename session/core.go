package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// DefaultOwner is the owner a program that embeds the manager for itself acts as.
const DefaultOwner = "local"

// SessionType is the kind of an MCP session's one sandbox: every tool of the session runs in
// it, the notebook tools included, so they all see the same workspace and background jobs.
// It is the Manager's key for those sandboxes' default config, creator and warm pool; serve
// makes them with notebook.LazyCreator, whose Jupyter starts on the session's first notebook
// call. It is not one of ms-enclave's types: the REST API neither creates nor pools it. A
// Manager without a creator for it serves sessions with a plain docker sandbox instead, in
// which every tool but the notebook's runs.
const SessionType sandbox.Type = "mcp_session"

// public reports whether typ is one of ms-enclave's sandbox types, which the REST API offers.
func public(typ sandbox.Type) bool { return typ == sandbox.TypeDocker || typ == sandbox.TypeNotebook }

// Limits bound what one call may cost the server. Zero fields take the defaults.
type Limits struct {
	// MaxArchiveBytes caps an uploaded tar stream (default 64 MiB).
	MaxArchiveBytes int64
	// MaxDownloadBytes caps a downloaded file or the files of a downloaded directory
	// (default 64 MiB).
	MaxDownloadBytes int64
	// MaxArchiveEntries caps the entries of an uploaded or downloaded tree (default 10000).
	MaxArchiveEntries int
	// MaxPoolSize caps InitializePool's size (default 32).
	MaxPoolSize int
	// PoolWait is how long ExecuteInPool waits for a free sandbox when the call names no
	// wait (default 60 s).
	PoolWait time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = 64 << 20
	}
	if l.MaxDownloadBytes <= 0 {
		l.MaxDownloadBytes = 64 << 20
	}
	if l.MaxArchiveEntries <= 0 {
		l.MaxArchiveEntries = 10000
	}
	if l.MaxPoolSize <= 0 {
		l.MaxPoolSize = 32
	}
	if l.PoolWait <= 0 {
		l.PoolWait = time.Minute
	}
	return l
}

// Config configures a Core; it knows nothing about flags or files.
type Config struct {
	// Manager creates and tracks the sandboxes; its policy and defaults apply to every config.
	Manager *sandbox.Manager
	// Tools are the tools offered (the operator's enabled set); nil means tools.All().
	Tools []tools.Def
	// ToolOptions are the operator's per-tool options. They win over the options a sandbox's
	// own tools_config sets, so a client cannot lift an operator's limit such as
	// max_output_bytes.
	ToolOptions sandbox.ToolsConfig
	// DefaultTimeout in seconds for tool calls that pass none, in sandboxes whose config
	// names none; 0 means sandbox.DefaultTimeout.
	DefaultTimeout float64
	// Version is reported by Health.
	Version string
	Limits  Limits
	Logger  *slog.Logger
	// Check, when set, is run by Health: e.g. a ping of the container engine.
	Check func(ctx context.Context) error
	// Tasks bound the tool calls that go on as tasks (see Tasks).
	Tasks TaskLimits
}

// Caller is one caller's view of the Core: an MCP session or a REST principal. It sees only
// the sandboxes its owner created, and it is the in-process api.Manager (ms-enclave's
// LocalSandboxManager); client.Remote is the same interface over HTTP.
type Caller struct {
	*Core
	owner string
}

// Core is the sandbox manager every face shares: the tools and their schemas, the
// operator's options and limits, and the pools' bookkeeping. Callers reach it through
// Caller.
type Core struct {
	m       *sandbox.Manager
	tools   []tools.Def
	byName  map[string]tools.Def
	schemas map[string]json.RawMessage // OpenAI function schema by tool name
	options sandbox.ToolsConfig
	timeout float64
	limits  Limits
	version string
	check   func(context.Context) error
	log     *slog.Logger
	started time.Time
	// sessionType is the kind of sandbox an MCP session's calls run in: SessionType when
	// the manager can create it, else docker.
	sessionType sandbox.Type

	// tasks are the calls that outlive their request, for every face.
	tasks *Tasks

	mu    sync.Mutex
	pools map[poolKey]*sandbox.Pool
}

type poolKey struct {
	owner string
	typ   sandbox.Type
}

var _ api.Manager = (*Caller)(nil)

// New returns a Core. The tools' schemas are generated here once, so a tool whose schema
// cannot be generated is an error at start rather than at the first call.
func New(cfg Config) (*Core, error) {
	if cfg.Manager == nil {
		return nil, errors.New("session.New: a sandbox manager is required")
	}
	if cfg.Tools == nil {
		cfg.Tools = tools.All()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Core{
		m: cfg.Manager, tools: cfg.Tools, byName: map[string]tools.Def{}, schemas: map[string]json.RawMessage{},
		options: cfg.ToolOptions, timeout: cfg.DefaultTimeout, limits: cfg.Limits.withDefaults(), version: cfg.Version, check: cfg.Check,
		log: cfg.Logger, started: time.Now(), pools: map[poolKey]*sandbox.Pool{}, sessionType: sandbox.TypeDocker,
		tasks: NewTasks(cfg.Tasks),
	}
	if slices.Contains(cfg.Manager.Types(), SessionType) {
		s.sessionType = SessionType
	}
	for _, def := range cfg.Tools {
		if _, dup := s.byName[def.Name]; dup {
			return nil, fmt.Errorf("tool %q is in Config.Tools twice: each tool needs a name of its own", def.Name)
		}
		raw, err := schema.OpenAI(def.Schema())
		if err != nil {
			return nil, fmt.Errorf("generating the schema of tool %s: %w", def.Name, err)
		}
		s.byName[def.Name] = def
		s.schemas[def.Name] = raw
	}
	return s, nil
}

// Caller returns owner's view: it shares the manager, the tools and the pools'
// bookkeeping, and sees only owner's sandboxes. Each MCP session and each REST principal is
// served through its own view.
func (c *Core) Caller(owner string) *Caller { return &Caller{Core: c, owner: owner} }

// Manager is the sandbox manager the Core drives.
func (c *Core) Manager() *sandbox.Manager { return c.m }

// Limits are the bounds of one call, with the defaults filled in.
func (c *Core) Limits() Limits { return c.limits }

// Version is the server version Health reports.
func (c *Core) Version() string { return c.version }

// ToolDefs are the tools the Core offers, in order.
func (c *Core) ToolDefs() []tools.Def { return c.tools }

// Owner is the owner this view acts for.
func (l *Caller) Owner() string { return l.owner }

// End removes every sandbox the caller holds: an MCP session has ended. Its tasks (scope:
// the caller's owner) are cancelled and forgotten.
func (l *Caller) End(ctx context.Context) error {
	l.tasks.EndScope(l.owner, true)
	return l.m.Release(ctx, l.owner)
}

// Close removes every owner's pooled sandboxes and stops lending them. Other sandboxes
// belong to the manager, whose Close removes them.
func (l *Core) Close(ctx context.Context) error {
	l.mu.Lock()
	pools := l.pools
	l.pools = map[poolKey]*sandbox.Pool{}
	l.mu.Unlock()
	// Every pool at once: the manager bounds the removals under way (sandbox.RemoveWorkers).
	list := slices.Collect(maps.Values(pools))
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, p := range list {
		wg.Go(func() { errs[i] = p.Close(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// types lists the sandbox types the REST API can create: ms-enclave's, those the manager has.
func (l *Core) types() []sandbox.Type {
	var out []sandbox.Type
	for _, t := range l.m.Types() {
		if public(t) {
			out = append(out, t)
		}
	}
	return out
}

// Health implements api.Manager; it is the same for every caller.
func (l *Core) Health(ctx context.Context) (api.Health, error) {
	types := make([]string, 0)
	for _, t := range l.types() {
		types = append(types, string(t))
	}
	h := api.Health{
		Healthy:         true,
		Version:         l.version,
		Uptime:          time.Since(l.started).Seconds(),
		ActiveSandboxes: l.m.Stats().Total,
		SystemInfo: map[string]any{
			"os": runtime.GOOS, "arch": runtime.GOARCH, "cpus": runtime.NumCPU(),
			"go_version": runtime.Version(), "sandbox_types": types,
		},
	}
	if l.check != nil {
		if err := l.check(ctx); err != nil {
			h.Healthy, h.Detail = false, err.Error()
		}
	}
	return h, nil
}

// Stats implements api.Manager.
func (l *Caller) Stats(context.Context) (api.Stats, error) {
	st := api.Stats{ManagerType: "enclave-mcp", StatusCounts: map[string]int{}, SandboxTypes: map[string]int{},
		Uptime: time.Since(l.started).Seconds()}
	for _, sb := range l.m.ListOwned(l.owner) {
		info := sb.Info()
		st.TotalSandboxes++
		st.StatusCounts[string(info.Status)]++
		st.SandboxTypes[string(info.Type)]++
		switch info.Status {
		case sandbox.StatusRunning, sandbox.StatusBusy, sandbox.StatusIdle:
			st.Running++
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, p := range l.pools {
		if key.owner == l.owner {
			st.PoolSize += p.Size()
			st.PoolAvailable += p.Free()
		}
	}
	return st, nil
}

// Create implements api.Manager.
func (l *Caller) Create(ctx context.Context, typ sandbox.Type, cfg sandbox.Config) (string, error) {
	typ, merged, err := l.prepare(typ, cfg)
	if err != nil {
		return "", err
	}
	sb, err := l.m.Create(ctx, l.owner, typ, merged)
	if err != nil {
		return "", err
	}
	return sb.ID(), nil
}

// prepare fills what cfg leaves empty from the operator's defaults and checks its tools. A
// request may not pick what only the operator's config sets (the runtime, see
// sandbox.CheckRequest); every other rule of the operator's policy is applied to the merged
// config by the manager's Create (sandbox.Resolve), whatever path the config took.
func (l *Core) prepare(typ sandbox.Type, cfg sandbox.Config) (sandbox.Type, sandbox.Config, error) {
	if typ == "" {
		typ = sandbox.TypeDocker
	}
	if !public(typ) {
		return typ, cfg, fmt.Errorf("%w: sandbox type %q is not available (have: %v)", sandbox.ErrInvalidConfig, typ, l.types())
	}
	defaults := l.m.DefaultConfig(typ)
	if err := sandbox.CheckRequest(defaults, cfg, l.m.Policy()); err != nil {
		return typ, cfg, err
	}
	merged := mergeConfig(defaults, cfg)
	if _, err := tools.Enabled(l.tools, merged.ToolsConfig); err != nil {
		return typ, merged, fmt.Errorf("%w: %w", sandbox.ErrInvalidConfig, err)
	}
	return typ, merged, nil
}

// mergeConfig returns req with every field it leaves empty taken from defaults. It walks
// the struct's fields by reflection so that a field added to sandbox.Config later is merged
// too. An empty map counts as unset: ms-enclave's client sends {} for env_vars, volumes and
// tools_config on every create, which must not wipe the operator's defaults.
func mergeConfig(defaults, req sandbox.Config) sandbox.Config {
	out := req
	dv, ov := reflect.ValueOf(defaults), reflect.ValueOf(&out).Elem()
	for i := range ov.NumField() {
		f := ov.Field(i)
		unset := f.IsZero()
		if f.Kind() == reflect.Map || f.Kind() == reflect.Slice {
			unset = f.Len() == 0
		}
		if unset {
			f.Set(dv.Field(i))
		}
	}
	return out
}

// Get implements api.Manager.
func (l *Caller) Get(_ context.Context, id string) (api.SandboxInfo, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	return l.info(sb), nil
}

// List implements api.Manager.
func (l *Caller) List(_ context.Context, status sandbox.Status) ([]api.SandboxInfo, error) {
	out := make([]api.SandboxInfo, 0)
	for _, sb := range l.m.ListOwned(l.owner) {
		info := l.info(sb)
		if status == "" || info.Status == status {
			out = append(out, info)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// info describes sb in ms-enclave's SandboxInfo shape.
func (l *Core) info(sb sandbox.Sandbox) api.SandboxInfo {
	in := sb.Info()
	meta := maps.Clone(in.Metadata)
	if meta == nil {
		meta = map[string]any{}
	}
	available := map[string]json.RawMessage{}
	for _, def := range l.toolsFor(sb, in.Type) {
		available[def.Name] = l.schemas[def.Name]
	}
	return api.SandboxInfo{
		ID: in.ID, Status: in.Status, Type: in.Type, Config: redactedConfig(sb, in),
		CreatedAt: in.CreatedAt.UTC(), UpdatedAt: in.UpdatedAt.UTC(), Metadata: meta, AvailableTools: available,
	}
}

// configured is implemented by sandboxes that can tell the config they run with.
type configured interface{ Config() sandbox.Resolved }

// redactedConfig is the config sb runs with, as the operator's policy resolved it (the
// limits actually applied, not the ones asked for), with environment values replaced:
// they may hold secrets, and ms-enclave returning them is one of its known leaks.
func redactedConfig(sb sandbox.Sandbox, in sandbox.Info) map[string]any {
	rc, ok := sb.(configured)
	if !ok {
		return map[string]any{"image": in.Image}
	}
	r := rc.Config()
	c := r.Config
	if len(c.EnvVars) > 0 {
		redacted := make(map[string]string, len(c.EnvVars))
		for k := range c.EnvVars {
			redacted[k] = "[redacted]"
		}
		c.EnvVars = redacted
	}
	c.MemoryLimit = sizeString(r.MemoryBytes)
	c.WorkspaceSize = sizeString(r.WorkspaceBytes)
	c.TmpSize = sizeString(r.TmpBytes)
	out := map[string]any{}
	raw, err := json.Marshal(c)
	if err == nil {
		err = json.Unmarshal(raw, &out)
	}
	if err != nil {
		return map[string]any{"image": in.Image}
	}
	return out
}

// sizeString writes a byte count the way configs spell sizes ("512m", "1g").
func sizeString(n int64) string {
	switch {
	case n == 0:
		return ""
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "g"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "m"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// Stop implements api.Manager.
func (l *Caller) Stop(ctx context.Context, id string) error {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return err
	}
	return sb.Stop(ctx)
}

// Delete implements api.Manager.
func (l *Caller) Delete(ctx context.Context, id string) error {
	return l.m.DeleteOwned(ctx, l.owner, id)
}

// Tools implements api.Manager.
func (l *Caller) Tools(_ context.Context, id string) (map[string]json.RawMessage, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return nil, err
	}
	return l.info(sb).AvailableTools, nil
}
