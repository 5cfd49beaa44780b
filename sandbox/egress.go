package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/egress"
)

// A sandbox whose config has egress (Resolved.Egress) keeps no network interface: its
// agent listens on the container's loopback (EgressProxyAddr) and hands each connection
// to the server as a stream, which the sandbox's egress.Proxy serves. The proxy variables
// in the sandbox's environment point programs at it, and, when a credential rule makes the
// server terminate TLS, a CA bundle holding the image's roots and the sandbox's own CA
// (written after the start) is named by the CA variables.

// egressOrDefault is svc, or a service with the system's roots and resolver.
func egressOrDefault(svc *egress.Service, log *slog.Logger) *egress.Service {
	if svc != nil {
		return svc
	}
	return egress.NewService(egress.Options{Logger: log})
}

// egressService is the service of backend b; one of another package gets a default.
func egressService(b Backend) *egress.Service {
	if e, ok := b.(interface{ Egress() *egress.Service }); ok {
		return e.Egress()
	}
	return egressOrDefault(nil, backendLog(b))
}

// systemBundles are where images keep their trusted roots: Debian and Ubuntu, Alpine;
// Fedora, RHEL and CentOS; others.
var systemBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"}

// installCABundle writes the sandbox's trust bundle: the image's roots, when it has any,
// and the sandbox's CA. It runs right after the start, before any code of the caller's.
func (s *AgentSandbox) installCABundle(ctx context.Context) error {
	ca := s.egress.CACertPEM()
	if ca == nil {
		return nil
	}
	var bundle bytes.Buffer
	for _, path := range systemBundles {
		res, err := s.File(ctx, FileRequest{Action: wire.FileRead, Path: path})
		var agentErr *AgentError
		if errors.As(err, &agentErr) && agentErr.Code == wire.CodeNotFound {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the image's CA bundle %s: %w", path, err)
		}
		bundle.Write(res.Data)
		if !bytes.HasSuffix(res.Data, []byte("\n")) {
			bundle.WriteByte('\n')
		}
		break
	}
	bundle.Write(ca)
	if _, err := s.File(ctx, FileRequest{Action: wire.FileWrite, Path: egressBundle, Data: bundle.Bytes(), Mode: 0o644}); err != nil {
		return fmt.Errorf("writing the sandbox's CA bundle %s: %w", egressBundle, err)
	}
	return nil
}

// EgressAddr is where programs in the sandbox reach its egress proxy, as its agent
// reported it; empty without egress.
func (s *AgentSandbox) EgressAddr() string { return s.ready.Egress }

// EgressReport is what the sandbox's egress did: its totals and latest log entries; nil
// without egress.
func (s *AgentSandbox) EgressReport() *egress.Report {
	if s.egress == nil {
		return nil
	}
	r := s.egress.Report()
	return &r
}

// EgressCACert is the sandbox's CA certificate (PEM), nil unless a credential rule needs
// one.
func (s *AgentSandbox) EgressCACert() []byte {
	if s.egress == nil {
		return nil
	}
	return s.egress.CACertPEM()
}

// maxRefusalNotes bounds the refusals one call's result lists.
const maxRefusalNotes = 5

// EgressRefusalsSince lists the destinations the sandbox's egress refused since t, as
// "host:port: why", for the result of a call that began at t (a refusal by a background
// program of the same sandbox lands in it too). At most maxRefusalNotes, the latest.
func (s *AgentSandbox) EgressRefusalsSince(t time.Time) []string {
	if s.egress == nil {
		return nil
	}
	var out []string
	for _, e := range s.egress.Report().Recent {
		if e.Allowed || e.Time.Before(t) {
			continue
		}
		out = append(out, fmt.Sprintf("%s:%d: %s", e.Host, e.Port, e.Reason))
	}
	if len(out) > maxRefusalNotes {
		out = out[len(out)-maxRefusalNotes:]
	}
	return out
}
