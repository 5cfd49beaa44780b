package egress

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configures a Service.
type Options struct {
	// RootCAs verify the real hosts when the server re-encrypts intercepted TLS; nil means
	// the system's roots.
	RootCAs *x509.CertPool
	// Resolver looks destinations up; nil means net.DefaultResolver.
	Resolver Resolver
	// LookupEnv reads the server's environment for "${env:NAME}"; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// DialTimeout bounds a connect to a destination; 0 means 10 s.
	DialTimeout time.Duration
	// Logger gets one line per connection or request: host, port, bytes, allowed or refused.
	Logger *slog.Logger
}

// Service is the server's egress, shared by every sandbox's Proxy: its options and its
// totals (metrics).
type Service struct {
	opts Options
	log  *slog.Logger

	allowed, refused, intercepted atomic.Uint64
	sent, received                atomic.Uint64
	active                        atomic.Int64
}

// NewService returns a Service with opts.
func NewService(opts Options) *Service {
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{opts: opts, log: log}
}

// Roots returns the system's roots plus the CAs in p.UpstreamCAFile, or nil (the system's)
// when p names no file.
func (p Policy) Roots() (*x509.CertPool, error) {
	if p.UpstreamCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(p.UpstreamCAFile)
	if err != nil {
		return nil, fmt.Errorf("policy.egress.upstream_ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("policy.egress.upstream_ca_file %s holds no PEM certificate", p.UpstreamCAFile)
	}
	return pool, nil
}

// Stats are a Service's totals since it started.
type Stats struct {
	// Allowed counts connections (CONNECT) and requests (plain or intercepted HTTP) let
	// through; Refused those the policy or a limit refused; Intercepted the CONNECTs whose
	// TLS the server terminated to add a credential.
	Allowed, Refused, Intercepted uint64
	// Sent is the bytes from sandboxes to destinations, Received the other way, as the
	// sandboxes' side of the proxy counts them.
	Sent, Received uint64
	// Active is the proxy connections open now.
	Active int64
}

// Stats returns the totals.
func (s *Service) Stats() Stats {
	return Stats{
		Allowed: s.allowed.Load(), Refused: s.refused.Load(), Intercepted: s.intercepted.Load(),
		Sent: s.sent.Load(), Received: s.received.Load(), Active: s.active.Load(),
	}
}

// refPattern is a reference in a credential's value.
var refPattern = regexp.MustCompile(`\$\{(env|file):([^}]+)\}`)

// maxCredentialFile bounds a "${file:...}" read.
const maxCredentialFile = 64 << 10

// refs checks the references in a credential value.
func refs(v string) ([][]string, error) {
	found := refPattern.FindAllStringSubmatch(v, -1)
	if strings.Count(v, "${") != len(found) {
		return nil, errors.New(`a "${" that is not "${env:NAME}" or "${file:/path}"`)
	}
	for _, m := range found {
		if m[1] == "file" && !strings.HasPrefix(m[2], "/") {
			return nil, fmt.Errorf("%q: a credential file must be an absolute path", m[0])
		}
	}
	return found, nil
}

// expand resolves a credential value's references. Errors name the reference, never a
// value.
func (s *Service) expand(v string) (string, error) {
	var failed error
	out := refPattern.ReplaceAllStringFunc(v, func(ref string) string {
		m := refPattern.FindStringSubmatch(ref)
		switch m[1] {
		case "env":
			val, ok := s.opts.LookupEnv(m[2])
			if !ok {
				failed = fmt.Errorf("the server's environment has no %s", m[2])
			}
			return val
		default:
			f, err := os.Open(m[2])
			if err != nil {
				failed = fmt.Errorf("reading credential file %s: %w", m[2], err)
				return ""
			}
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile))
			if err != nil {
				failed = fmt.Errorf("reading credential file %s: %w", m[2], err)
			}
			return strings.TrimRight(string(b), "\r\n")
		}
	})
	if failed == nil && strings.ContainsAny(out, "\r\n\x00") {
		failed = errors.New("the credential's value holds a line break or NUL")
	}
	return out, failed
}
