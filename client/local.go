package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// DefaultOwner owns the sandboxes of a Local whose config names no owner.
const DefaultOwner = "local"

// Limits bound what one call of a Local may cost the server. Zero fields take the defaults.
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

// LocalConfig configures a Local.
type LocalConfig struct {
	// Manager creates and tracks the sandboxes; its policy and defaults apply to every config.
	Manager *sandbox.Manager
	// Tools are the tools offered (the operator's enabled set); nil means tools.All().
	Tools []tools.Def
	// ToolOptions are the operator's per-tool options. They win over the options a sandbox's
	// own tools_config sets, so a client cannot lift an operator's limit such as
	// max_output_bytes.
	ToolOptions sandbox.ToolsConfig
	// Owner owns the sandboxes this Local creates and is the only owner whose sandboxes it
	// sees; empty means DefaultOwner.
	Owner string
	// Version is reported by Health.
	Version string
	Limits  Limits
	Logger  *slog.Logger
	// Check, when set, is run by Health: e.g. a ping of the container engine.
	Check func(ctx context.Context) error
}

// Local is a Manager over a *sandbox.Manager in this process.
type Local struct {
	*shared
	owner string
}

// shared is what every owner's view of one Local has in common.
type shared struct {
	m       *sandbox.Manager
	tools   []tools.Def
	byName  map[string]tools.Def
	schemas map[string]json.RawMessage // OpenAI function schema by tool name
	options sandbox.ToolsConfig
	limits  Limits
	version string
	check   func(context.Context) error
	log     *slog.Logger
	started time.Time

	mu    sync.Mutex
	pools map[poolKey]*sandbox.Pool
}

type poolKey struct {
	owner string
	typ   sandbox.Type
}

var _ Manager = (*Local)(nil)

// NewLocal returns a Local. The tools' schemas are generated here once, so a tool whose
// schema cannot be generated is an error at start rather than at the first call.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Manager == nil {
		return nil, errors.New("client.NewLocal: a sandbox manager is required")
	}
	if cfg.Tools == nil {
		cfg.Tools = tools.All()
	}
	if cfg.Owner == "" {
		cfg.Owner = DefaultOwner
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &shared{
		m: cfg.Manager, tools: cfg.Tools, byName: map[string]tools.Def{}, schemas: map[string]json.RawMessage{},
		options: cfg.ToolOptions, limits: cfg.Limits.withDefaults(), version: cfg.Version, check: cfg.Check,
		log: cfg.Logger, started: time.Now(), pools: map[poolKey]*sandbox.Pool{},
	}
	for _, def := range cfg.Tools {
		raw, err := schema.OpenAI(def.Schema())
		if err != nil {
			return nil, fmt.Errorf("generating the schema of tool %s: %w", def.Name, err)
		}
		s.byName[def.Name] = def
		s.schemas[def.Name] = raw
	}
	return &Local{shared: s, owner: cfg.Owner}, nil
}

// As returns a view of the same Local for another owner: it shares the manager, the tools
// and the pools' bookkeeping, and sees only owner's sandboxes. The HTTP API serves each
// principal through its own view.
func (l *Local) As(owner string) *Local { return &Local{shared: l.shared, owner: owner} }

// Owner is the owner this view acts for.
func (l *Local) Owner() string { return l.owner }

// Close removes every owner's pooled sandboxes and stops lending them. Other sandboxes
// belong to the manager, whose Close removes them.
func (l *Local) Close(ctx context.Context) error {
	l.mu.Lock()
	pools := l.pools
	l.pools = map[poolKey]*sandbox.Pool{}
	l.mu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Close(ctx))
	}
	return errors.Join(errs...)
}

// Health implements Manager.
func (l *Local) Health(ctx context.Context) (Health, error) {
	types := make([]string, 0)
	for _, t := range l.m.Types() {
		types = append(types, string(t))
	}
	h := Health{
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

// Stats implements Manager.
func (l *Local) Stats(context.Context) (Stats, error) {
	st := Stats{ManagerType: "enclave-mcp", StatusCounts: map[string]int{}, SandboxTypes: map[string]int{},
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

// Create implements Manager.
func (l *Local) Create(ctx context.Context, typ sandbox.Type, cfg sandbox.Config) (string, error) {
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
func (l *Local) prepare(typ sandbox.Type, cfg sandbox.Config) (sandbox.Type, sandbox.Config, error) {
	if typ == "" {
		typ = sandbox.TypeDocker
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

// Get implements Manager.
func (l *Local) Get(_ context.Context, id string) (Info, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return Info{}, err
	}
	return l.info(sb), nil
}

// List implements Manager.
func (l *Local) List(_ context.Context, status sandbox.Status) ([]Info, error) {
	out := make([]Info, 0)
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
func (l *Local) info(sb sandbox.Sandbox) Info {
	in := sb.Info()
	meta := maps.Clone(in.Metadata)
	if meta == nil {
		meta = map[string]any{}
	}
	available := map[string]json.RawMessage{}
	for _, def := range l.toolsFor(sb, in.Type) {
		available[def.Name] = l.schemas[def.Name]
	}
	return Info{
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

// toolsFor lists the tools sb offers. Tools made for plain docker sandboxes need only
// processes and files, which every sandbox type has, so they run in any type (a notebook
// sandbox also runs python_executor, as in ms-enclave); other tools only in their own type.
// A sandbox whose tools_config names tools offers only those.
func (l *Local) toolsFor(sb sandbox.Sandbox, typ sandbox.Type) []tools.Def {
	var enabled sandbox.ToolsConfig
	if rc, ok := sb.(configured); ok {
		enabled = rc.Config().ToolsConfig
	}
	var out []tools.Def
	for _, def := range l.tools {
		if def.Sandbox != typ && def.Sandbox != sandbox.TypeDocker {
			continue
		}
		if _, ok := enabled[def.Name]; len(enabled) > 0 && !ok {
			continue
		}
		out = append(out, def)
	}
	return out
}

// Stop implements Manager.
func (l *Local) Stop(ctx context.Context, id string) error {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return err
	}
	return sb.Stop(ctx)
}

// Delete implements Manager.
func (l *Local) Delete(ctx context.Context, id string) error {
	return l.m.DeleteOwned(ctx, l.owner, id)
}

// Tools implements Manager.
func (l *Local) Tools(_ context.Context, id string) (map[string]json.RawMessage, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return nil, err
	}
	return l.info(sb).AvailableTools, nil
}

// ExecuteTool implements Manager.
func (l *Local) ExecuteTool(ctx context.Context, id, tool string, params any) (tools.Result, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return tools.Result{}, err
	}
	return l.run(ctx, sb, tool, params)
}

// run runs tool in sb. Arguments the tool refuses come back as an error result, the way a
// model gets them over MCP, so a harness shows them to its model instead of crashing.
func (l *Local) run(ctx context.Context, sb sandbox.Sandbox, name string, params any) (tools.Result, error) {
	info := sb.Info()
	def, opts, err := l.tool(sb, info, name)
	if err != nil {
		return tools.Result{}, err
	}
	if err := runnable(info); err != nil {
		return tools.Result{}, err
	}
	raw, err := rawParams(params)
	if err != nil {
		return tools.Result{}, err
	}
	call := tools.Call{Sandbox: sb, Options: opts, DefaultTimeout: sandbox.DefaultTimeout}
	if rc, ok := sb.(configured); ok && rc.Config().Timeout > 0 {
		call.DefaultTimeout = rc.Config().Timeout
	}
	res, err := def.Invoke(ctx, call, raw)
	if errors.Is(err, tools.ErrInvalidArgs) {
		return argFailure(name, err), nil
	}
	return res, err
}

// tool finds name among sb's tools, with its options: the sandbox's own, overridden by the
// operator's.
func (l *Local) tool(sb sandbox.Sandbox, info sandbox.Info, name string) (tools.Def, map[string]any, error) {
	offered := l.toolsFor(sb, info.Type)
	names := make([]string, 0, len(offered))
	for _, def := range offered {
		if def.Name != name {
			names = append(names, def.Name)
			continue
		}
		opts := map[string]any{}
		if rc, ok := sb.(configured); ok {
			maps.Copy(opts, rc.Config().ToolsConfig[name])
		}
		maps.Copy(opts, l.options[name])
		return def, opts, nil
	}
	return tools.Def{}, nil, fmt.Errorf("tool %q is not available in sandbox %s (available: %s): %w",
		name, info.ID, strings.Join(names, ", "), sandbox.ErrNotFound)
}

// runnable refuses a sandbox that was stopped or failed: the tools' own message for it
// ("the next call starts a fresh sandbox") is true of MCP sessions, not of an explicit id.
func runnable(info sandbox.Info) error {
	switch info.Status {
	case sandbox.StatusRunning, sandbox.StatusIdle, sandbox.StatusBusy:
		return nil
	}
	return fmt.Errorf("sandbox %s is %s; create a new one: %w", info.ID, info.Status, sandbox.ErrClosed)
}

func rawParams(params any) (json.RawMessage, error) {
	switch p := params.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case json.RawMessage:
		return p, nil
	case []byte:
		return p, nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding tool parameters: %w", ErrBadRequest, err)
	}
	return raw, nil
}

func argFailure(tool string, err error) tools.Result {
	return tools.Result{
		Status: tools.StatusError, ToolName: tool, Error: err.Error(),
		Metadata: map[string]any{"invalid_arguments": true}, Timestamp: time.Now().UTC(),
	}
}

// InitializePool implements Manager.
func (l *Local) InitializePool(ctx context.Context, size int, typ sandbox.Type, cfg *sandbox.Config) ([]string, error) {
	if size < 1 || size > l.limits.MaxPoolSize {
		return nil, fmt.Errorf("%w: pool_size %d must be between 1 and %d", ErrBadRequest, size, l.limits.MaxPoolSize)
	}
	var req sandbox.Config
	if cfg != nil {
		req = *cfg
	}
	typ, merged, err := l.prepare(typ, req)
	if err != nil {
		return nil, err
	}
	return l.pool(typ, true).Grow(ctx, size, merged)
}

// pool returns this owner's pool of type typ, making it when create is set.
func (l *Local) pool(typ sandbox.Type, create bool) *sandbox.Pool {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := poolKey{l.owner, typ}
	p := l.pools[key]
	if p == nil && create {
		p = sandbox.NewPool(l.m, l.owner, typ)
		l.pools[key] = p
	}
	return p
}

// ExecuteInPool implements Manager. The tool's sandbox type picks the pool; a tool made for
// plain docker sandboxes also runs in a notebook pool when there is no docker pool.
func (l *Local) ExecuteInPool(ctx context.Context, tool string, params any, wait time.Duration) (tools.Result, error) {
	def, ok := l.byName[tool]
	if !ok {
		return tools.Result{}, fmt.Errorf("tool %q: %w", tool, sandbox.ErrNotFound)
	}
	p := l.pool(def.Sandbox, false)
	if (p == nil || p.Size() == 0) && def.Sandbox == sandbox.TypeDocker {
		if nb := l.pool(sandbox.TypeNotebook, false); nb != nil {
			p = nb
		}
	}
	if p == nil {
		return tools.Result{}, sandbox.ErrPoolEmpty
	}
	if wait <= 0 {
		wait = l.limits.PoolWait
	}
	sb, err := p.Borrow(ctx, wait)
	if err != nil {
		return tools.Result{}, err
	}
	defer p.Return(sb)
	return l.run(ctx, sb, tool, params)
}
