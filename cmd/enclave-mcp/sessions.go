package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// sessionsConfig is the config file's "sessions" section: the operator's word on the
// session API's named sessions (sandbox_runtime's). Sizes are spelt "50M", the idle
// timeout in seconds, as sandbox_runtime spells them.
type sessionsConfig struct {
	DefaultSize     string                        `json:"default_size"`
	MaxSize         string                        `json:"max_size"`
	IdleTimeout     float64                       `json:"idle_timeout"`
	AllowedCommands []string                      `json:"allowed_commands"`
	ScriptTypes     map[string]session.ScriptType `json:"script_types"`
	// Languages are the multi_code_executor languages execute_code takes: absent (null)
	// is all of them, [] none.
	Languages []string `json:"languages"`
	Image     string   `json:"image"`
}

// sessionFlags are serve's flags for named sessions. The Helm chart maps session.size to
// --session-size and session.timeout (seconds) to --session-idle=<n>s: keep the names.
type sessionFlags struct {
	size, maxSize string
	idle          time.Duration
}

func (f *sessionFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.size, "session-size", "50M", "HTTP session API: a session's workspace size when its create names none (the config's sessions.default_size)")
	fs.StringVar(&f.maxSize, "session-max-size", "1G", "HTTP session API: the largest workspace size a create may ask for; larger is refused (sessions.max_size)")
	fs.DurationVar(&f.idle, "session-idle", session.DefaultSessionIdle, "HTTP session API: end a session unused for this long, never while a command runs (sessions.idle_timeout, in seconds)")
}

// namedConfig merges the config file's sessions section and the flags: a flag given on the
// command line wins, else the file, else the flag's default. set names the flags given.
func (f *sessionFlags) namedConfig(fc sessionsConfig, set map[string]bool) (session.NamedConfig, error) {
	cfg := session.NamedConfig{AllowedCommands: fc.AllowedCommands, ScriptTypes: fc.ScriptTypes, Languages: fc.Languages, Image: fc.Image}
	pick := func(flagName, flagValue, fileName, fileValue string) (int64, error) {
		what, v := "--"+flagName, flagValue
		if !set[flagName] && fileValue != "" {
			what, v = "sessions."+fileName, fileValue
		}
		if v == "" {
			return 0, nil // the default
		}
		n, err := sandbox.ParseSize(v)
		if err != nil {
			return 0, fmt.Errorf("%s: %w (e.g. 50M)", what, err)
		}
		return n, nil
	}
	var err error
	if cfg.DefaultSize, err = pick("session-size", f.size, "default_size", fc.DefaultSize); err != nil {
		return cfg, err
	}
	if cfg.MaxSize, err = pick("session-max-size", f.maxSize, "max_size", fc.MaxSize); err != nil {
		return cfg, err
	}
	switch {
	case set["session-idle"]:
		if f.idle <= 0 {
			return cfg, fmt.Errorf("--session-idle %s: want a positive duration, e.g. 1h or 3600s", f.idle)
		}
		cfg.IdleTimeout = f.idle
	case fc.IdleTimeout != 0:
		if !(fc.IdleTimeout > 0) || fc.IdleTimeout > 365*24*3600 {
			return cfg, fmt.Errorf("sessions.idle_timeout %v: want a positive number of seconds", fc.IdleTimeout)
		}
		cfg.IdleTimeout = time.Duration(fc.IdleTimeout * float64(time.Second))
	default:
		cfg.IdleTimeout = f.idle // 0 (flags not registered) takes the default
	}
	return cfg.WithDefaults()
}

// setFlags names the flags given on fs's command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// maxTokensFileBytes caps a --tokens-file.
const maxTokensFileBytes = 1 << 20

// readTokensFile reads --tokens-file: one principal a line, "name:token"; blank lines and
// lines starting with # are skipped. Each name is its own principal (httpapi.TokenOwner),
// for the REST API, MCP and the session API alike. A file others can read is used, with a
// warning. Errors name the line, never a token.
func readTokensFile(path string, log *slog.Logger) ([]httpapi.Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading --tokens-file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("the --tokens-file can be read by other users: chmod 600 it", "path", path, "mode", st.Mode().Perm().String())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokensFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading --tokens-file %s: %w", path, err)
	}
	if len(data) > maxTokensFileBytes {
		return nil, fmt.Errorf("--tokens-file %s: larger than %d bytes", path, maxTokensFileBytes)
	}
	var out []httpapi.Credential
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxTokensFileBytes)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, token, ok := strings.Cut(text, ":")
		name, token = strings.TrimSpace(name), strings.TrimSpace(token)
		if !ok || name == "" || token == "" {
			return nil, fmt.Errorf("--tokens-file %s, line %d: want name:token", path, line)
		}
		if err := checkToken(token); err != nil {
			return nil, fmt.Errorf("--tokens-file %s, line %d: the token of %q %w", path, line, name, err)
		}
		out = append(out, httpapi.Credential{Name: name, Token: token})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading --tokens-file %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--tokens-file %s: no tokens; want one name:token a line", path)
	}
	return out, nil
}
