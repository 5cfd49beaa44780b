package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the proxy's reading of what a sandbox sends.
const (
	// maxHeaderBytes bounds a request's line and headers.
	maxHeaderBytes = 64 << 10
	// idleTimeout bounds the wait for a request on an open proxy connection, and a TLS
	// handshake.
	idleTimeout = 2 * time.Minute
	// maxLog is how many recent entries a Proxy keeps for Report.
	maxLog = 100
	// relayBuffer is the size of the writes to a sandbox's stream: the most one message of
	// the agent's stream carries.
	relayBuffer = 64 << 10
)

// Proxy is one sandbox's egress: it serves the streams the sandbox's agent opens.
type Proxy struct {
	svc   *Service
	name  string
	rules *compiled
	ca    *authority // nil without credential rules
	conns chan struct{}
	bytes atomic.Int64 // moved both ways, against rules.MaxBytes

	transport *http.Transport
	ctx       context.Context
	cancel    context.CancelFunc

	mu       sync.Mutex
	open     map[net.Conn]struct{} // streams being served, closed by Close
	closed   bool
	recent   []Entry // the last maxLog, oldest first
	allowed  uint64
	refused  uint64
	sent     int64
	received int64
}

// Entry is one line of a sandbox's egress log: a CONNECT tunnel (when it ends) or an HTTP
// request, allowed or refused.
type Entry struct {
	Time        time.Time `json:"time"`
	Method      string    `json:"method"`
	Host        string    `json:"host"`
	Port        int       `json:"port"`
	Allowed     bool      `json:"allowed"`
	Intercepted bool      `json:"intercepted,omitempty"` // TLS terminated to add a credential
	Status      int       `json:"status,omitempty"`      // the HTTP status the sandbox got
	Sent        int64     `json:"bytes_sent"`            // from the sandbox
	Received    int64     `json:"bytes_received"`        // to the sandbox
	Reason      string    `json:"reason,omitempty"`      // why it was refused or failed
}

// Report is what a sandbox's egress did: its totals and its latest log entries.
type Report struct {
	Allow       []string `json:"allow"`
	Ports       []int    `json:"ports"`
	Credentials []string `json:"credential_hosts,omitempty"`
	Allowed     uint64   `json:"allowed"`
	Refused     uint64   `json:"refused"`
	Sent        int64    `json:"bytes_sent"`
	Received    int64    `json:"bytes_received"`
	Recent      []Entry  `json:"recent,omitempty"`
}

// NewProxy makes sandbox name's proxy for rules; with credential rules it also makes the
// sandbox's CA (CACertPEM).
func (s *Service) NewProxy(name string, rules Rules) (*Proxy, error) {
	c, err := compileRules(rules)
	if err != nil {
		return nil, err
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	p := &Proxy{svc: s, name: name, rules: c, conns: make(chan struct{}, c.MaxConnections), open: map[net.Conn]struct{}{}}
	if len(c.Credentials) > 0 {
		hosts := make([]string, len(c.Credentials))
		for i, cr := range c.Credentials {
			hosts[i] = cr.Host
		}
		if p.ca, err = newAuthority(name, hosts); err != nil {
			return nil, err
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.transport = &http.Transport{
		Proxy:               nil, // never the server's own proxy settings
		DialContext:         p.dialChecked,
		TLSClientConfig:     &tls.Config{RootCAs: s.opts.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: s.opts.DialTimeout,
		DisableCompression:  true, // the sandbox's Accept-Encoding and bodies pass as they are
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	return p, nil
}

// CACertPEM is the sandbox's CA certificate, for its trust store; nil when no credential
// rule needs one.
func (p *Proxy) CACertPEM() []byte {
	if p.ca == nil {
		return nil
	}
	return p.ca.certPEM
}

// Close ends every stream the proxy serves and its upstream connections.
func (p *Proxy) Close() {
	p.cancel()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.transport.CloseIdleConnections()
}

// Reset readies the proxy for a sandbox's next borrower: the streams still open end, and
// the log, the totals and the byte count start again.
func (p *Proxy) Reset() {
	p.mu.Lock()
	for c := range p.open {
		_ = c.Close()
	}
	p.recent, p.allowed, p.refused, p.sent, p.received = nil, 0, 0, 0, 0
	p.mu.Unlock()
	p.bytes.Store(0)
	p.transport.CloseIdleConnections()
}

// track adds conn to the streams Close ends; false means the proxy is closed already.
func (p *Proxy) track(conn net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[conn] = struct{}{}
	return true
}

func (p *Proxy) untrack(conn net.Conn) {
	p.mu.Lock()
	delete(p.open, conn)
	p.mu.Unlock()
}

// Report returns the sandbox's egress totals and latest entries.
func (p *Proxy) Report() Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Report{Allow: p.rules.Allow, Ports: p.rules.Ports, Allowed: p.allowed, Refused: p.refused,
		Sent: p.sent, Received: p.received, Recent: append([]Entry(nil), p.recent...)}
	for _, c := range p.rules.Credentials {
		r.Credentials = append(r.Credentials, c.Host)
	}
	return r
}

// record logs e and adds it to the sandbox's log and the totals.
func (p *Proxy) record(e Entry) {
	e.Time = time.Now()
	p.mu.Lock()
	if len(p.recent) == maxLog {
		p.recent = append(p.recent[:0], p.recent[1:]...)
	}
	p.recent = append(p.recent, e)
	if e.Allowed {
		p.allowed++
	} else {
		p.refused++
	}
	p.sent += e.Sent
	p.received += e.Received
	p.mu.Unlock()
	if e.Allowed {
		p.svc.allowed.Add(1)
	} else {
		p.svc.refused.Add(1)
	}
	level := p.svc.log.Info
	if !e.Allowed {
		level = p.svc.log.Warn
	}
	args := []any{"sandbox", p.name, "method", e.Method, "host", e.Host, "port", e.Port, "allowed", e.Allowed,
		"bytes_sent", e.Sent, "bytes_received", e.Received}
	if e.Status != 0 {
		args = append(args, "status", e.Status)
	}
	if e.Intercepted {
		args = append(args, "intercepted", true)
	}
	if e.Reason != "" {
		args = append(args, "reason", e.Reason)
	}
	level("egress", args...)
}

// Serve runs the proxy on conn, one program's connection to the sandbox's proxy address,
// until either side ends it.
func (p *Proxy) Serve(conn net.Conn) {
	defer conn.Close()
	if !p.track(conn) {
		return
	}
	defer p.untrack(conn)
	p.svc.active.Add(1)
	defer p.svc.active.Add(-1)
	cc := &countingConn{Conn: conn, p: p}
	select {
	case p.conns <- struct{}{}:
		defer func() { <-p.conns }()
	default:
		// The answer follows the request, as clients expect (an answer before it reads as
		// one to an earlier request); the request is read within the usual bounds.
		method, host := "", ""
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		hl := &headerLimit{r: cc}
		hl.arm()
		if req, err := http.ReadRequest(bufio.NewReader(hl)); err == nil {
			method, host = req.Method, req.Host
		}
		p.refuse(cc, method, host, 0, http.StatusServiceUnavailable,
			fmt.Sprintf("the sandbox has %d proxy connections open, the most its egress policy allows", p.rules.MaxConnections))
		return
	}
	hl := &headerLimit{r: cc}
	br := bufio.NewReaderSize(hl, 16<<10)
	for {
		start := cc.snapshot()
		hl.arm()
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				p.refuse(cc, "", "", 0, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("a request's headers passed %d bytes", maxHeaderBytes))
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) && !isTimeout(err) {
				p.refuse(cc, "", "", 0, http.StatusBadRequest, "not an HTTP proxy request: "+err.Error())
			}
			return
		}
		hl.disarm()
		_ = conn.SetReadDeadline(time.Time{})
		if req.Method == http.MethodConnect {
			p.connect(cc, br, req)
			return
		}
		if !req.URL.IsAbs() || (req.URL.Scheme != "http") {
			p.refuse(cc, req.Method, req.Host, 0, http.StatusBadRequest,
				fmt.Sprintf("%q is not an absolute http:// URL: this is an HTTP proxy (send absolute-URI requests, or CONNECT for https)", req.RequestURI))
			return
		}
		host, port, err := splitHostPort(req.URL.Host, 80)
		if err != nil {
			p.refuse(cc, req.Method, req.URL.Host, 0, http.StatusBadRequest, err.Error())
			return
		}
		if !p.forward(cc, start, req, "http", host, port, false) {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// decide resolves host and checks it against the rules and the byte limit; the decision
// names the address to dial, or why not.
func (p *Proxy) decide(ctx context.Context, host string, port int) decision {
	if p.bytes.Load() >= p.rules.MaxBytes {
		return decision{reason: fmt.Sprintf("the sandbox has moved %d bytes through its proxy, the most its egress policy allows", p.rules.MaxBytes)}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		// A name no entry lists is refused without a lookup: the sandbox cannot use the
		// server's resolver to probe names or to carry data out in them.
		if named, _ := p.rules.nameAllowed(host, port); !named {
			return p.rules.check(host, port, nil)
		}
		lctx, cancel := context.WithTimeout(ctx, p.svc.opts.DialTimeout)
		defer cancel()
		found, err := p.svc.opts.Resolver.LookupNetIP(lctx, "ip", host)
		if err != nil {
			return decision{reason: fmt.Sprintf("looking up %s: %v", host, err)}
		}
		addrs = found
	}
	return p.rules.check(host, port, addrs)
}

// dialKey carries a request's checked address to dialChecked.
type dialKey struct{}

// dialChecked dials the address decide chose for the request; a connection the transport
// opens for any other reason is checked afresh.
func (p *Proxy) dialChecked(ctx context.Context, network, addr string) (net.Conn, error) {
	target, ok := ctx.Value(dialKey{}).(netip.AddrPort)
	if !ok {
		host, port, err := splitHostPort(addr, 0)
		if err != nil {
			return nil, err
		}
		d := p.decide(ctx, host, port)
		if d.reason != "" {
			return nil, &refusal{host: addr, reason: d.reason}
		}
		target = d.addr
	}
	return p.dial(ctx, target)
}

func (p *Proxy) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: p.svc.opts.DialTimeout}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-p.ctx.Done():
			stop()
		case <-ctx.Done():
		}
	}()
	return d.DialContext(ctx, "tcp", addr.String())
}

// connect serves a CONNECT: refused, intercepted (a credential rule names the host), or
// relayed untouched.
func (p *Proxy) connect(cc *countingConn, br *bufio.Reader, req *http.Request) {
	host, port, err := splitHostPort(req.Host, 443)
	if err != nil {
		p.refuse(cc, req.Method, req.Host, 0, http.StatusBadRequest, err.Error())
		return
	}
	d := p.decide(p.ctx, host, port)
	if d.reason != "" {
		p.refuse(cc, req.Method, host, port, http.StatusForbidden, d.reason)
		return
	}
	if cred := p.rules.credential(host); cred != nil && p.ca != nil {
		p.svc.intercepted.Add(1)
		if _, err := io.WriteString(cc, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		p.intercept(cc, br, host, port)
		return
	}
	up, err := p.dial(p.ctx, d.addr)
	if err != nil {
		p.fail(cc, req.Method, host, port, fmt.Sprintf("connecting to %s (%s): %v", host, d.addr, err))
		return
	}
	defer up.Close()
	start := cc.snapshot()
	if _, err := io.WriteString(cc, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	relay(cc, br, up)
	sent, received := cc.since(start)
	p.record(Entry{Method: req.Method, Host: host, Port: port, Allowed: true, Status: http.StatusOK, Sent: sent, Received: received})
}

// relay copies both ways until the destination's side ends; the sandbox's end of input
// half-closes the destination's connection.
func relay(cc *countingConn, br *bufio.Reader, up net.Conn) {
	cc.strict.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, br) // what the sandbox sent after the CONNECT, then the rest
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	// A reader without WriteTo, so that the copy goes in relayBuffer pieces: each write is
	// one message on the agent's stream.
	_, _ = io.CopyBuffer(cc, struct{ io.Reader }{up}, make([]byte, relayBuffer))
	_ = cc.Close() // ends the copy above if the sandbox still sends
	<-done
}

// intercept terminates the sandbox's TLS to host with the sandbox's CA and serves the
// HTTP requests inside, each forwarded to host over TLS verified as usual.
func (p *Proxy) intercept(cc *countingConn, br *bufio.Reader, host string, port int) {
	tconn := tls.Server(&bufferedConn{Conn: cc, r: br}, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			// The CONNECT's host, whatever the SNI says: that is the host the policy checked
			// and the one the credential goes to.
			return p.ca.leaf(host)
		},
	})
	defer tconn.Close()
	_ = cc.SetDeadline(time.Now().Add(idleTimeout))
	if err := tconn.Handshake(); err != nil {
		p.fail(cc, http.MethodConnect, host, port, "TLS handshake with the sandbox failed (does it trust the sandbox's CA bundle?): "+err.Error())
		return
	}
	_ = cc.SetDeadline(time.Time{})
	hl := &headerLimit{r: tconn}
	tbr := bufio.NewReaderSize(hl, 16<<10)
	for {
		start := cc.snapshot()
		hl.arm()
		_ = cc.SetReadDeadline(time.Now().Add(idleTimeout))
		req, err := http.ReadRequest(tbr)
		if err != nil {
			return
		}
		hl.disarm()
		_ = cc.SetReadDeadline(time.Time{})
		req.URL.Scheme = "https"
		req.URL.Host = net.JoinHostPort(host, strconv.Itoa(port))
		if !p.forward(&tlsSide{Conn: tconn, cc: cc}, start, req, "https", host, port, true) {
			return
		}
	}
}

// forward sends one HTTP request on to its destination, with the host's credential when a
// rule names it, and writes the answer to w. It reports whether w may carry another.
// start is the stream's byte counts before the request was read.
func (p *Proxy) forward(w sandboxSide, start [2]int64, req *http.Request, scheme, host string, port int, intercepted bool) bool {
	d := p.decide(p.ctx, host, port)
	if d.reason != "" {
		p.refuseRequest(w, req.Method, host, port, http.StatusForbidden, d.reason, intercepted)
		return false
	}
	out := req.Clone(context.WithValue(p.ctx, dialKey{}, d.addr))
	out.RequestURI = ""
	out.URL.Scheme = scheme
	removeHopHeaders(out.Header)
	if cred := p.rules.credential(host); cred != nil {
		value, err := p.svc.expand(cred.Value)
		if err != nil {
			p.refuseRequest(w, req.Method, host, port, http.StatusBadGateway, "the credential for "+host+" is not available on the server: "+err.Error(), intercepted)
			return false
		}
		out.Header.Set(cred.Header, value)
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// The destination is allowed: the client may send its body now, rather than after
		// its own wait (a second, for curl).
		out.Header.Del("Expect")
		if _, err := io.WriteString(w, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
	}
	cc := w.counter()
	cc.strict.Store(true) // the request's body and the answer count against the limit
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		cc.strict.Store(false)
		p.refuseRequest(w, req.Method, host, port, http.StatusBadGateway, fmt.Sprintf("%s %s: %v", req.Method, host, err), intercepted)
		return false
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	keep := !req.Close && !resp.Close
	if !keep {
		resp.Close = true
	}
	// Whole stream messages: the agent stream carries a write as one message each.
	bw := bufio.NewWriterSize(w, relayBuffer)
	werr := resp.Write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	cc.strict.Store(false)
	sent, received := w.counter().since(start)
	p.record(Entry{Method: req.Method, Host: host, Port: port, Allowed: true, Intercepted: intercepted, Status: resp.StatusCode, Sent: sent, Received: received})
	return keep && werr == nil
}

// hopHeaders are the headers that belong to one connection, never forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for name := range strings.SplitSeq(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// refuse answers a refused connection or request and logs it. The reason goes in the
// status line too: a CONNECT's body is never shown by most clients, its status line is
// (Python: "Tunnel connection failed: 403 ...").
func (p *Proxy) refuse(w io.Writer, method, host string, port, status int, reason string) {
	p.record(Entry{Method: method, Host: host, Port: port, Allowed: false, Status: status, Reason: reason})
	writeRefusal(w, status, reason)
}

// refuseRequest answers one request that failed or was refused inside a connection.
func (p *Proxy) refuseRequest(w io.Writer, method, host string, port, status int, reason string, intercepted bool) {
	allowed := status != http.StatusForbidden
	p.record(Entry{Method: method, Host: host, Port: port, Allowed: allowed, Intercepted: intercepted, Status: status, Reason: reason})
	writeRefusal(w, status, reason)
}

// fail logs a connection the policy allowed but that could not be made, and answers 502.
func (p *Proxy) fail(w io.Writer, method, host string, port int, reason string) {
	p.record(Entry{Method: method, Host: host, Port: port, Allowed: true, Status: http.StatusBadGateway, Reason: reason})
	writeRefusal(w, http.StatusBadGateway, reason)
}

func writeRefusal(w io.Writer, status int, reason string) {
	msg := "enclave-mcp egress: " + reason
	if status == http.StatusForbidden {
		msg = "enclave-mcp egress policy: " + reason
	}
	phrase := http.StatusText(status) + " (" + statusLine(msg) + ")"
	body := msg + "\n"
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\nX-Enclave-Egress: refused\r\n\r\n%s",
		status, phrase, len(body), body)
}

// statusLine makes text safe and short for a status line.
func statusLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > 300 {
		b = append(b[:297], "..."...)
	}
	return string(b)
}

// sandboxSide is the sandbox's end of a proxied exchange: the stream itself, or the TLS
// connection inside it.
type sandboxSide interface {
	io.Writer
	counter() *countingConn
}

// countingConn counts the bytes of a sandbox's stream against its proxy's byte limit.
// While strict (bytes on their way to or from a destination), passing the limit cuts the
// stream; otherwise (the proxy's own requests and answers, a few KiB each and bounded) it
// only counts, so that a refusal saying why still gets through.
type countingConn struct {
	net.Conn
	p              *Proxy
	sent, received atomic.Int64 // from and to the sandbox
	strict         atomic.Bool
}

var errQuota = errors.New("the sandbox's egress byte limit is used up")

func (c *countingConn) over() bool {
	return c.strict.Load() && c.p.bytes.Load() >= c.p.rules.MaxBytes
}

func (c *countingConn) Read(b []byte) (int, error) {
	if c.over() {
		return 0, errQuota
	}
	n, err := c.Conn.Read(b)
	c.sent.Add(int64(n))
	c.p.bytes.Add(int64(n))
	c.p.svc.sent.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	if c.over() {
		return 0, errQuota
	}
	n, err := c.Conn.Write(b)
	c.received.Add(int64(n))
	c.p.bytes.Add(int64(n))
	c.p.svc.received.Add(uint64(n))
	return n, err
}

func (c *countingConn) counter() *countingConn { return c }

// snapshot and since measure the bytes of one exchange.
func (c *countingConn) snapshot() [2]int64 { return [2]int64{c.sent.Load(), c.received.Load()} }
func (c *countingConn) since(s [2]int64) (sent, received int64) {
	return c.sent.Load() - s[0], c.received.Load() - s[1]
}

// tlsSide is an intercepted exchange's sandbox end: writes go through TLS, bytes are
// counted on the stream under it.
type tlsSide struct {
	net.Conn
	cc *countingConn
}

func (t *tlsSide) counter() *countingConn { return t.cc }

// bufferedConn reads what a bufio.Reader already took from the stream before the rest.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// headerLimit fails a read once a request's headers pass maxHeaderBytes; disarmed, it
// reads without limit (a body).
type headerLimit struct {
	r     io.Reader
	left  int
	armed bool
}

var errHeaderTooLarge = errors.New("request headers too large")

func (h *headerLimit) arm()    { h.left, h.armed = maxHeaderBytes, true }
func (h *headerLimit) disarm() { h.armed = false }

func (h *headerLimit) Read(b []byte) (int, error) {
	if !h.armed {
		return h.r.Read(b)
	}
	if h.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if len(b) > h.left {
		b = b[:h.left]
	}
	n, err := h.r.Read(b)
	h.left -= n
	return n, err
}
