// Package egress is the server's side of a sandbox's way out: the sandbox has no network
// interface, its agent hands each connection a program makes to its loopback proxy address
// to the server as a stream, and this package serves that stream as an HTTP proxy (CONNECT
// and absolute-URI requests). It allows only the destinations the sandbox's Rules list,
// checks the address it resolved (and dials that very address, so that DNS rebinding
// cannot swap it), refuses private, loopback, link-local and metadata addresses unless a
// rule lists them, and adds the operator's credentials to requests for the hosts they are
// bound to, terminating TLS for those hosts with a CA of the sandbox's own. The credential
// never enters the sandbox.
//
// The package is a leaf: it knows nothing of sandboxes beyond a name for its logs.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// ErrPolicy marks a config the operator's egress policy refuses; it is api.ErrPolicy.
var ErrPolicy = api.ErrPolicy

// ErrInvalid marks an entry or rule that cannot be understood; it is api.ErrInvalidConfig.
var ErrInvalid = api.ErrInvalidConfig

// Defaults for what a Policy leaves unset.
const (
	DefaultMaxConnections = 64
	DefaultMaxBytes       = 1 << 30
)

// DefaultPorts are the ports allowed to entries without a port of their own, when the
// policy names none.
var DefaultPorts = []int{80, 443}

// Policy is the operator's egress policy, the "egress" section of the config file's
// "policy". It is the most any sandbox may reach: a sandbox's config can narrow it
// (api.EgressConfig), never widen it.
type Policy struct {
	// Allow lists the destinations: "host", "*.domain" (any name below domain, not domain
	// itself), an IP address, or a CIDR, each optionally with ":port" ("[ipv6]:port" and
	// "[cidr]:port" for IPv6). Everything else is refused. An IP or CIDR entry allows
	// destinations given as addresses; names must be listed as names (an unlisted name is
	// not looked up). Private, loopback, link-local, shared and metadata addresses are
	// refused even for a listed name unless an IP or CIDR entry covers the address.
	Allow []string `json:"allow"`
	// Ports are allowed to entries without a port; empty means 80 and 443.
	Ports []int `json:"ports,omitempty"`
	// Credentials are added by the server to requests for their hosts.
	Credentials []Credential `json:"credentials,omitempty"`
	// UpstreamCAFile is a PEM file of CAs the server trusts, besides the system's, when it
	// re-encrypts intercepted TLS to a credential's host (an internal API with a private
	// CA). It is the server's setting, read at start (Roots); sandboxes never see it.
	UpstreamCAFile string `json:"upstream_ca_file,omitempty"`
	// MaxConnections caps one sandbox's proxy connections at once; 0 means 64.
	MaxConnections int `json:"max_connections,omitempty"`
	// MaxBytes caps the bytes one sandbox moves through the proxy in its life, both ways;
	// 0 means 1 GiB. It is checked before each write of at most 64 KiB: a transfer under
	// way stops within that much past it, and later requests are refused (403).
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// Credential is a header the server sets on every request to Host: the sandbox sees at
// most a placeholder. HTTPS to Host is intercepted (TLS terminated with the sandbox's CA
// and re-encrypted to Host, verified as usual); other HTTPS passes through untouched.
type Credential struct {
	// Host is a name ("api.example.com") or a wildcard ("*.example.com").
	Host string `json:"host"`
	// Header is the header's name, e.g. "Authorization". Whatever the sandbox sent under
	// that name is replaced.
	Header string `json:"header"`
	// Value is the header's value; "${env:NAME}" is replaced by the server's environment
	// variable NAME and "${file:/path}" by the file's content (trailing newline dropped),
	// read when a request needs it.
	Value string `json:"value"`
	// PlaceholderEnv, when set, names an environment variable the sandbox gets with the
	// value Placeholder, for SDKs that refuse to start without a key.
	PlaceholderEnv string `json:"placeholder_env,omitempty"`
}

// Placeholder is the value a sandbox sees in a credential's PlaceholderEnv.
const Placeholder = "enclave-placeholder"

// Rules are one sandbox's egress: the operator's policy narrowed by its config. They are
// stored with the sandbox (a container label) and hold no secret: credential values stay
// references until a request needs them.
type Rules struct {
	Allow          []string     `json:"allow"`
	Ports          []int        `json:"ports"`
	Credentials    []Credential `json:"credentials,omitempty"`
	MaxConnections int          `json:"max_connections"`
	MaxBytes       int64        `json:"max_bytes"`
}

// entry is one parsed Allow entry.
type entry struct {
	text     string
	name     string       // an exact host name, lower case
	suffix   string       // a wildcard's ".domain"
	prefix   netip.Prefix // an IP (a full-length prefix) or CIDR
	port     int          // 0: the rules' Ports
	wildcard bool
}

func (e entry) isAddr() bool { return e.prefix.IsValid() }

// parseEntry reads one Allow entry.
func parseEntry(s string) (entry, error) {
	e := entry{text: s}
	hostPart := strings.TrimSpace(s)
	bad := func(why string) (entry, error) {
		return e, fmt.Errorf("%w: egress allow entry %q: %s (want \"host\", \"*.domain\", an IP, or a CIDR, each optionally with \":port\")", ErrInvalid, s, why)
	}
	switch {
	case strings.HasPrefix(hostPart, "["):
		end := strings.Index(hostPart, "]")
		if end < 0 {
			return bad("no closing ]")
		}
		rest := hostPart[end+1:]
		hostPart = hostPart[1:end]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return bad("junk after ]")
			}
			p, err := parsePort(rest[1:])
			if err != nil {
				return bad(err.Error())
			}
			e.port = p
		}
	case strings.Count(hostPart, ":") == 1:
		h, p, _ := strings.Cut(hostPart, ":")
		port, err := parsePort(p)
		if err != nil {
			return bad(err.Error())
		}
		hostPart, e.port = h, port
	}
	if hostPart == "" {
		return bad("empty host")
	}
	if strings.Contains(hostPart, "/") {
		pfx, err := netip.ParsePrefix(hostPart)
		if err != nil {
			return bad(err.Error())
		}
		if pfx != pfx.Masked() {
			return bad(fmt.Sprintf("host bits set (did you mean %s?)", pfx.Masked()))
		}
		e.prefix = pfx
		return e, nil
	}
	if addr, err := netip.ParseAddr(hostPart); err == nil {
		addr = addr.Unmap()
		e.prefix = netip.PrefixFrom(addr, addr.BitLen())
		return e, nil
	}
	name := normalizeHost(hostPart)
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		if !validName(rest) || !strings.Contains(rest, ".") {
			return bad("a wildcard needs a domain of two labels or more below it, such as *.example.com")
		}
		e.suffix, e.wildcard = "."+rest, true
		return e, nil
	}
	if !validName(name) {
		return bad("not a host name")
	}
	e.name = name
	return e, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return p, nil
}

// normalizeHost lower-cases a host name and drops a final dot.
func normalizeHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// validName accepts letters, digits, hyphens, underscores and dots, in labels of 1-63.
func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// ports is the ports e allows.
func (e entry) ports(defaults []int) []int {
	if e.port != 0 {
		return []int{e.port}
	}
	return defaults
}

// matchesName tells whether e names host (already normalized).
func (e entry) matchesName(host string) bool {
	switch {
	case e.wildcard:
		return strings.HasSuffix(host, e.suffix)
	case e.name != "":
		return e.name == host
	}
	return false
}

// covers tells whether e allows everything r does, ports included.
func (e entry) covers(r entry, ePorts, rPorts []int) bool {
	for _, p := range r.ports(rPorts) {
		if !slices.Contains(e.ports(ePorts), p) {
			return false
		}
	}
	switch {
	case e.isAddr():
		return r.isAddr() && e.prefix.Bits() <= r.prefix.Bits() && e.prefix.Contains(r.prefix.Addr())
	case e.wildcard:
		return r.name != "" && strings.HasSuffix(r.name, e.suffix) || r.wildcard && strings.HasSuffix(r.suffix, e.suffix)
	default:
		return r.name == e.name
	}
}

// Validate checks the policy, so that a mistake fails at the server's start.
func (p Policy) Validate() error {
	_, err := p.compile()
	return err
}

func (p Policy) compile() ([]entry, error) {
	if p.MaxConnections < 0 || p.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: policy.egress: max_connections and max_bytes must not be negative", ErrInvalid)
	}
	for _, port := range p.Ports {
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("%w: policy.egress.ports: %d is not a port from 1 to 65535", ErrInvalid, port)
		}
	}
	entries := make([]entry, 0, len(p.Allow))
	for _, s := range p.Allow {
		e, err := parseEntry(s)
		if err != nil {
			return nil, fmt.Errorf("policy.egress: %w", err)
		}
		entries = append(entries, e)
	}
	for i, c := range p.Credentials {
		e, err := parseEntry(c.Host)
		switch {
		case err != nil || e.isAddr() || e.port != 0:
			return nil, fmt.Errorf("%w: policy.egress.credentials[%d].host %q must be a host name or *.domain, without a port", ErrInvalid, i, c.Host)
		case c.Header == "" || strings.ContainsAny(c.Header, " :\r\n"):
			return nil, fmt.Errorf("%w: policy.egress.credentials[%d].header %q must be a header name such as Authorization", ErrInvalid, i, c.Header)
		case strings.ContainsAny(c.Value, "\r\n"):
			return nil, fmt.Errorf("%w: policy.egress.credentials[%d].value must not hold a line break", ErrInvalid, i)
		case c.PlaceholderEnv != "" && strings.ContainsAny(c.PlaceholderEnv, "=\x00 "):
			return nil, fmt.Errorf("%w: policy.egress.credentials[%d].placeholder_env %q is not a variable name", ErrInvalid, i, c.PlaceholderEnv)
		}
		if _, err := refs(c.Value); err != nil {
			return nil, fmt.Errorf("%w: policy.egress.credentials[%d].value: %w", ErrInvalid, i, err)
		}
	}
	return entries, nil
}

// Narrow returns the rules of a sandbox whose config asks for req within p. Each entry
// req lists must fall within one of p's, with its ports; the credentials kept are those
// whose host the narrowed list still allows.
func (p Policy) Narrow(req api.EgressConfig) (Rules, error) {
	policyEntries, err := p.compile()
	if err != nil {
		return Rules{}, err
	}
	policyPorts := cmpOr(p.Ports, DefaultPorts)
	r := Rules{
		Allow:          slices.Clone(p.Allow),
		Ports:          slices.Clone(policyPorts),
		MaxConnections: cmpOrInt(p.MaxConnections, DefaultMaxConnections),
		MaxBytes:       cmpOrInt(p.MaxBytes, DefaultMaxBytes),
	}
	for _, port := range req.Ports {
		if !slices.Contains(policyPorts, port) {
			return Rules{}, fmt.Errorf("%w: egress port %d is not allowed by the operator's egress policy (allowed: %s)", ErrPolicy, port, joinInts(policyPorts))
		}
	}
	if len(req.Ports) > 0 {
		r.Ports = slices.Clone(req.Ports)
	}
	if len(req.Allow) > 0 {
		r.Allow = nil
		for _, s := range req.Allow {
			e, err := parseEntry(s)
			if err != nil {
				return Rules{}, err
			}
			if !slices.ContainsFunc(policyEntries, func(pe entry) bool { return pe.covers(e, policyPorts, r.Ports) }) {
				return Rules{}, fmt.Errorf("%w: egress entry %q is not within the operator's egress policy (allowed: %s; ports %s)",
					ErrPolicy, s, strings.Join(p.Allow, ", "), joinInts(policyPorts))
			}
			r.Allow = append(r.Allow, s)
		}
	}
	entries, _ := compileAllow(r.Allow)
	for _, c := range p.Credentials {
		ce, _ := parseEntry(c.Host)
		if slices.ContainsFunc(entries, func(e entry) bool { return e.coversSome(ce) }) {
			r.Credentials = append(r.Credentials, c)
		}
	}
	return r, nil
}

// coversSome tells whether a name entry e allows some name that credential host c matches.
func (e entry) coversSome(c entry) bool {
	switch {
	case e.isAddr():
		return false
	case c.wildcard:
		return e.name != "" && strings.HasSuffix(e.name, c.suffix) || e.wildcard && (strings.HasSuffix(e.suffix, c.suffix) || strings.HasSuffix(c.suffix, e.suffix))
	default:
		return e.matchesName(c.name)
	}
}

func compileAllow(allow []string) ([]entry, error) {
	out := make([]entry, 0, len(allow))
	for _, s := range allow {
		e, err := parseEntry(s)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func cmpOr(a, b []int) []int {
	if len(a) > 0 {
		return a
	}
	return b
}

func cmpOrInt[T int | int64](a, b T) T {
	if a > 0 {
		return a
	}
	return b
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// Withheld stands for a credential value written literally in the policy, wherever the
// rules are recorded (Redacted).
const Withheld = "(a literal value, withheld)"

// Redacted is r as it may be recorded outside the server (a container label): a credential
// value that holds no ${env:...} or ${file:...} reference is the secret itself, and is
// replaced by Withheld.
func (r Rules) Redacted() Rules {
	out := r
	out.Credentials = slices.Clone(r.Credentials)
	for i, c := range out.Credentials {
		if !refPattern.MatchString(c.Value) {
			out.Credentials[i].Value = Withheld
		}
	}
	return out
}

// Env is the environment a sandbox with these rules gets: the proxy variables every
// common client reads (pointing at proxyAddr), the CA bundle variables when caBundle is
// set, and each credential's placeholder.
func (r Rules) Env(proxyAddr, caBundle string) []string {
	url := "http://" + proxyAddr
	env := []string{
		"HTTP_PROXY=" + url, "HTTPS_PROXY=" + url, "http_proxy=" + url, "https_proxy=" + url,
		"ALL_PROXY=" + url, "all_proxy=" + url,
		"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1",
	}
	if caBundle != "" {
		for _, k := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS"} {
			env = append(env, k+"="+caBundle)
		}
	}
	for _, c := range r.Credentials {
		if c.PlaceholderEnv != "" {
			env = append(env, c.PlaceholderEnv+"="+Placeholder)
		}
	}
	return env
}

// decision is what the policy says of one destination.
type decision struct {
	addr   netip.AddrPort // the address to dial: the one that was checked
	reason string         // why it is refused; empty when allowed
}

// refusal is a destination the rules refuse; the proxy answers it with 403.
type refusal struct{ host, reason string }

func (r *refusal) Error() string {
	return fmt.Sprintf("enclave-mcp egress policy refused %s: %s", r.host, r.reason)
}

// errRefused is what every refusal wraps, for callers that branch on it.
var errRefused = errors.New("refused by the egress policy")

func (r *refusal) Unwrap() error { return errRefused }

// special are the ranges refused unless an IP or CIDR entry lists the address: they reach
// the server's own host, its private networks, or cloud metadata services.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (carrier-grade NAT)
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, 169.254.169.254 metadata included
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: any IPv4 address, private ones included
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("fc00::/7"), // unique local, fd00:ec2::254 metadata included
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// specialRange names the refused range addr is in, or "".
func specialRange(addr netip.Addr) string {
	for _, p := range special {
		if p.Contains(addr) {
			return p.String()
		}
	}
	return ""
}

// compiled is Rules ready to check destinations.
type compiled struct {
	Rules
	entries []entry
}

func compileRules(r Rules) (*compiled, error) {
	entries, err := compileAllow(r.Allow)
	if err != nil {
		return nil, err
	}
	if len(r.Ports) == 0 {
		r.Ports = DefaultPorts
	}
	return &compiled{Rules: r, entries: entries}, nil
}

// nameAllowed tells whether a name entry lists host on port.
func (c *compiled) nameAllowed(host string, port int) (named, portOK bool) {
	for _, e := range c.entries {
		if e.matchesName(host) {
			named = true
			if slices.Contains(e.ports(c.Ports), port) {
				return true, true
			}
		}
	}
	return named, false
}

// addrListed tells whether an IP or CIDR entry lists addr on port.
func (c *compiled) addrListed(addr netip.Addr, port int) bool {
	for _, e := range c.entries {
		if e.isAddr() && e.prefix.Contains(addr) && slices.Contains(e.ports(c.Ports), port) {
			return true
		}
	}
	return false
}

// addrListedAnyPort tells whether an IP or CIDR entry lists addr, on any port.
func (c *compiled) addrListedAnyPort(addr netip.Addr) bool {
	for _, e := range c.entries {
		if e.isAddr() && e.prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// check decides one destination among the addresses host resolved to (addrs; for an IP
// literal, the address itself). The first allowed address is the one to dial.
func (c *compiled) check(host string, port int, addrs []netip.Addr) decision {
	named, namePortOK := c.nameAllowed(host, port)
	if named && !namePortOK || !named && len(addrs) > 0 && !c.addrListed(addrs[0].Unmap(), port) && c.addrListedAnyPort(addrs[0].Unmap()) {
		return decision{reason: fmt.Sprintf("port %d is not allowed for %s (allowed ports: %s, or an entry's own)", port, host, joinInts(c.Ports))}
	}
	reason := fmt.Sprintf("%s is not in the sandbox's egress allow-list (%s)", host, strings.Join(c.Allow, ", "))
	_, literalErr := netip.ParseAddr(host)
	for _, a := range addrs {
		a = a.Unmap()
		listed := c.addrListed(a, port)
		// An IP or CIDR entry allows an address given as such; a name must be listed by
		// name (an unlisted name is never even looked up: the server's resolver is no
		// channel out), and the entry then only lifts the refusal of special ranges.
		if !namePortOK && !(literalErr == nil && listed) {
			continue
		}
		if r := specialRange(a); r != "" && !listed {
			reason = fmt.Sprintf("%s resolves to %s, in %s (private, loopback, link-local or metadata), which no IP or CIDR entry of the allow-list covers", host, a, r)
			continue
		}
		return decision{addr: netip.AddrPortFrom(a, uint16(port))}
	}
	return decision{reason: reason}
}

// credential is the rule for host, or nil.
func (c *compiled) credential(host string) *Credential {
	for i, cr := range c.Credentials {
		e, err := parseEntry(cr.Host)
		if err == nil && e.matchesName(host) {
			return &c.Credentials[i]
		}
	}
	return nil
}

// splitHostPort splits a CONNECT target or URL host, with defPort when it has no port.
func splitHostPort(hostport string, defPort int) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return normalizeHost(strings.Trim(hostport, "[]")), defPort, nil
		}
		return "", 0, fmt.Errorf("bad host %q: %w", hostport, err)
	}
	port, err := parsePort(p)
	if err != nil {
		return "", 0, err
	}
	return normalizeHost(host), port, nil
}
