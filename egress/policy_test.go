package egress

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/api"
)

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{in: "pypi.org"},
		{in: "PyPI.org."},
		{in: "files.pythonhosted.org:443"},
		{in: "*.example.com"},
		{in: "*.example.com:8443"},
		{in: "10.0.0.0/8"},
		{in: "127.0.0.1"},
		{in: "127.0.0.1:8080"},
		{in: "fd00::/8"},
		{in: "[fd00::/8]:443"},
		{in: "[::1]:80"},
		{in: "", wantErr: "empty host"},
		{in: "*.com", wantErr: "two labels"},
		{in: "*", wantErr: "not a host name"},
		{in: "a b.com", wantErr: "not a host name"},
		{in: "host:0", wantErr: "port"},
		{in: "host:99999", wantErr: "port"},
		{in: "10.0.0.1/8", wantErr: "host bits set"},
		{in: "[::1", wantErr: "closing ]"},
		{in: "http://x.com", wantErr: "is not a number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := parseEntry(tc.in)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseEntry(%q): %v", tc.in, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid)):
				t.Fatalf("parseEntry(%q) = %v, want an ErrInvalid error containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

func TestNarrow(t *testing.T) {
	policy := Policy{
		Allow: []string{"pypi.org", "*.example.com", "10.1.0.0/16", "git.example.org:22"},
		Ports: []int{80, 443, 8080},
		Credentials: []Credential{
			{Host: "api.example.com", Header: "Authorization", Value: "Bearer ${env:API_KEY}"},
			{Host: "pypi.org", Header: "X-Token", Value: "t"},
		},
	}
	for _, tc := range []struct {
		name      string
		req       api.EgressConfig
		wantErr   string
		wantAllow []string
		wantCreds []string
	}{
		{name: "empty asks for the whole policy", wantAllow: policy.Allow, wantCreds: []string{"api.example.com", "pypi.org"}},
		{name: "exact within wildcard", req: api.EgressConfig{Allow: []string{"api.example.com"}},
			wantAllow: []string{"api.example.com"}, wantCreds: []string{"api.example.com"}},
		{name: "deeper wildcard", req: api.EgressConfig{Allow: []string{"*.eu.example.com"}}, wantAllow: []string{"*.eu.example.com"}},
		{name: "smaller CIDR", req: api.EgressConfig{Allow: []string{"10.1.2.0/24", "10.1.9.9:8080"}}, wantAllow: []string{"10.1.2.0/24", "10.1.9.9:8080"}},
		{name: "port subset", req: api.EgressConfig{Allow: []string{"pypi.org"}, Ports: []int{443}},
			wantAllow: []string{"pypi.org"}, wantCreds: []string{"pypi.org"}},
		{name: "other host", req: api.EgressConfig{Allow: []string{"evil.com"}}, wantErr: `"evil.com" is not within`},
		{name: "wildcard apex", req: api.EgressConfig{Allow: []string{"example.com"}}, wantErr: "is not within"},
		{name: "wider wildcard", req: api.EgressConfig{Allow: []string{"*.com.example.com", "*.org"}}, wantErr: "*.org"},
		{name: "wider CIDR", req: api.EgressConfig{Allow: []string{"10.0.0.0/8"}}, wantErr: "is not within"},
		{name: "port of a host", req: api.EgressConfig{Allow: []string{"pypi.org:22"}}, wantErr: "is not within"},
		{name: "port outside", req: api.EgressConfig{Ports: []int{22}}, wantErr: "port 22"},
		{name: "entry-specific port kept", req: api.EgressConfig{Allow: []string{"git.example.org:22"}}, wantAllow: []string{"git.example.org:22"}},
		{name: "bad entry", req: api.EgressConfig{Allow: []string{"a b"}}, wantErr: "not a host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := policy.Narrow(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Narrow = %+v, %v; want an error containing %q", r, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(r.Allow, " ") != strings.Join(tc.wantAllow, " ") {
				t.Errorf("allow = %v, want %v", r.Allow, tc.wantAllow)
			}
			var creds []string
			for _, c := range r.Credentials {
				creds = append(creds, c.Host)
			}
			if strings.Join(creds, " ") != strings.Join(tc.wantCreds, " ") {
				t.Errorf("credential hosts = %v, want %v", creds, tc.wantCreds)
			}
			if r.MaxConnections != DefaultMaxConnections || r.MaxBytes != DefaultMaxBytes {
				t.Errorf("limits = %d, %d; want the defaults", r.MaxConnections, r.MaxBytes)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       Policy
		wantErr string
	}{
		{name: "ok", p: Policy{Allow: []string{"a.com"}, Credentials: []Credential{{Host: "*.a.com", Header: "Authorization", Value: "Bearer ${env:K} ${file:/run/k}"}}}},
		{name: "bad port", p: Policy{Ports: []int{0}}, wantErr: "ports"},
		{name: "negative limit", p: Policy{MaxBytes: -1}, wantErr: "negative"},
		{name: "credential on an IP", p: Policy{Credentials: []Credential{{Host: "10.0.0.1", Header: "A", Value: "v"}}}, wantErr: "host name"},
		{name: "header with colon", p: Policy{Credentials: []Credential{{Host: "a.com", Header: "A:", Value: "v"}}}, wantErr: "header"},
		{name: "unknown reference", p: Policy{Credentials: []Credential{{Host: "a.com", Header: "A", Value: "${vault:x}"}}}, wantErr: "${env:NAME}"},
		{name: "relative file", p: Policy{Credentials: []Credential{{Host: "a.com", Header: "A", Value: "${file:k}"}}}, wantErr: "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	rules, err := compileRules(Rules{
		Allow: []string{"pypi.org", "*.example.com", "203.0.113.0/24", "api.internal:8443", "10.9.9.9", "[fd00:1::/64]:443"},
		Ports: []int{80, 443},
	})
	if err != nil {
		t.Fatal(err)
	}
	public := netip.MustParseAddr("93.184.216.34")
	for _, tc := range []struct {
		name   string
		host   string
		port   int
		addrs  []string
		want   string // the address dialled, or "" for refused
		reason string // part of the refusal
	}{
		{name: "exact", host: "pypi.org", port: 443, addrs: []string{public.String()}, want: "93.184.216.34:443"},
		{name: "exact other port", host: "pypi.org", port: 22, addrs: []string{public.String()}, reason: "port 22 is not allowed"},
		{name: "wildcard", host: "a.example.com", port: 443, addrs: []string{public.String()}, want: "93.184.216.34:443"},
		{name: "deep wildcard", host: "a.b.example.com", port: 80, addrs: []string{public.String()}, want: "93.184.216.34:80"},
		{name: "wildcard apex", host: "example.com", port: 443, addrs: []string{public.String()}, reason: "not in the sandbox's egress allow-list"},
		{name: "suffix lookalike", host: "evilexample.com", port: 443, addrs: []string{public.String()}, reason: "not in"},
		{name: "unlisted", host: "evil.com", port: 443, addrs: []string{public.String()}, reason: "evil.com is not in"},
		{name: "CIDR by address", host: "203.0.113.7", port: 443, addrs: []string{"203.0.113.7"}, want: "203.0.113.7:443"},
		{name: "CIDR does not allow names", host: "anything.net", port: 80, addrs: []string{"203.0.113.9"}, reason: "anything.net is not in"},
		{name: "outside CIDR", host: "203.0.114.1", port: 443, addrs: []string{"203.0.114.1"}, reason: "not in"},
		{name: "entry port", host: "api.internal", port: 8443, addrs: []string{public.String()}, want: "93.184.216.34:8443"},
		{name: "entry port only", host: "api.internal", port: 443, addrs: []string{public.String()}, reason: "port 443"},
		{name: "listed name to loopback", host: "pypi.org", port: 443, addrs: []string{"127.0.0.1"}, reason: "127.0.0.0/8"},
		{name: "listed name to metadata", host: "a.example.com", port: 80, addrs: []string{"169.254.169.254"}, reason: "169.254.0.0/16"},
		{name: "listed name to IPv6 metadata", host: "a.example.com", port: 80, addrs: []string{"fd00:ec2::254"}, reason: "fc00::/7"},
		{name: "listed name to mapped loopback", host: "a.example.com", port: 80, addrs: []string{"::ffff:127.0.0.1"}, reason: "127.0.0.0/8"},
		{name: "listed name to private", host: "pypi.org", port: 443, addrs: []string{"10.0.0.5"}, reason: "10.0.0.0/8"},
		{name: "rebinding skips the private answer", host: "pypi.org", port: 443, addrs: []string{"10.0.0.5", public.String()}, want: "93.184.216.34:443"},
		{name: "private address listed", host: "10.9.9.9", port: 80, addrs: []string{"10.9.9.9"}, want: "10.9.9.9:80"},
		{name: "name to listed private address", host: "pypi.org", port: 443, addrs: []string{"10.9.9.9"}, want: "10.9.9.9:443"},
		{name: "unspecified", host: "0.0.0.0", port: 80, addrs: []string{"0.0.0.0"}, reason: "not in"},
		{name: "IPv6 CIDR with port", host: "fd00:1::5", port: 443, addrs: []string{"fd00:1::5"}, want: "[fd00:1::5]:443"},
		{name: "IPv6 CIDR other port", host: "fd00:1::5", port: 80, addrs: []string{"fd00:1::5"}, reason: "port 80 is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []netip.Addr
			for _, a := range tc.addrs {
				addrs = append(addrs, netip.MustParseAddr(a))
			}
			d := rules.check(tc.host, tc.port, addrs)
			if tc.want != "" {
				if d.reason != "" || d.addr.String() != tc.want {
					t.Fatalf("check(%s:%d) = %v %q, want %s", tc.host, tc.port, d.addr, d.reason, tc.want)
				}
				return
			}
			if d.reason == "" || !strings.Contains(d.reason, tc.reason) {
				t.Fatalf("check(%s:%d) = %v %q, want a refusal containing %q", tc.host, tc.port, d.addr, d.reason, tc.reason)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	r := Rules{Credentials: []Credential{{Host: "a.com", Header: "A", Value: "${env:K}", PlaceholderEnv: "API_KEY"}}}
	env := strings.Join(r.Env("127.0.0.1:3128", "/etc/ca.pem"), "\n")
	for _, want := range []string{"HTTPS_PROXY=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128", "NO_PROXY=localhost",
		"SSL_CERT_FILE=/etc/ca.pem", "REQUESTS_CA_BUNDLE=/etc/ca.pem", "API_KEY=" + Placeholder} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
}
