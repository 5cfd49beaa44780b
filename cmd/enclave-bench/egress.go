package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The egress proxy's cost: one Python client, run once per path in a sandbox, times plain
// HTTP requests to a server of the bench's own on the host, listening on the Docker
// bridge's gateway address. Through the proxy: a sandbox with no network and an egress
// allow-list naming that server, so every byte goes agent stream → server proxy → server.
// Direct: the same image in a sandbox on the bridge network, connecting to the same address.
// Three measures: a request on a kept-alive connection, a request on a new connection (the
// proxy's per-connection cost: a new agent stream, the policy check, the dial), and the time
// to download egressBulkBytes (throughput).

const egressBulkBytes = 64 << 20

// egressClient is the client both paths run: `python3 -c SCRIPT mode host port n`. It
// prints one JSON object of timings in seconds.
const egressClient = `
import http.client, json, os, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
proxy = os.environ["http_proxy"].split("//")[1].split(":") if mode == "proxy" else None
def connect():
    if proxy:
        return http.client.HTTPConnection(proxy[0], int(proxy[1]), timeout=120)
    return http.client.HTTPConnection(host, port, timeout=120)
def get(c, path):
    c.request("GET", ("http://%s:%d%s" % (host, port, path)) if proxy else path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit("GET %s: %d %s" % (path, r.status, body[:300]))
    return len(body)
out = {"keepalive": [], "fresh": [], "bulk": []}
c = connect()
get(c, "/small")
for _ in range(n):
    t = time.perf_counter(); get(c, "/small"); out["keepalive"].append(time.perf_counter() - t)
for _ in range(n):
    t = time.perf_counter(); c2 = connect(); get(c2, "/small"); c2.close(); out["fresh"].append(time.perf_counter() - t)
for _ in range(3):
    t = time.perf_counter(); out["bytes"] = get(c, "/bulk"); out["bulk"].append(time.perf_counter() - t)
print(json.dumps(out))
`

type egressTimings struct {
	KeepAlive []float64 `json:"keepalive"`
	Fresh     []float64 `json:"fresh"`
	Bulk      []float64 `json:"bulk"`
	Bytes     int       `json:"bytes"`
}

func (b *bench) egressProxy(ctx context.Context) error {
	gw, err := b.bridgeGateway(ctx)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		return fmt.Errorf("listening on the bridge's gateway %s: %w", gw, err)
	}
	bulk := bytes.Repeat([]byte("0123456789abcdef"), egressBulkBytes/16)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(bulk)))
		_, _ = w.Write(bulk)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port

	proxied, err := sandbox.Resolve(sandbox.Config{Image: b.cfg.Image, Egress: &sandbox.EgressConfig{}},
		sandbox.Policy{Egress: &egress.Policy{Allow: []string{net.JoinHostPort(gw, strconv.Itoa(port))}}})
	if err != nil {
		return err
	}
	direct, err := sandbox.Resolve(sandbox.Config{Image: b.cfg.Image, NetworkEnabled: true}, sandbox.Policy{AllowNetwork: true})
	if err != nil {
		return err
	}
	name := "egress: GET via proxy | direct"
	fmt.Fprintf(os.Stderr, "  %-44s", name)
	var via, dir egressTimings
	for _, path := range []struct {
		mode string
		cfg  sandbox.Resolved
		out  *egressTimings
	}{{"proxy", proxied, &via}, {"direct", direct, &dir}} {
		if err := b.egressRun(ctx, path.mode, path.cfg, gw, port, path.out); err != nil {
			fmt.Fprintln(os.Stderr, "failed")
			return fmt.Errorf("%s (%s): %w", name, path.mode, err)
		}
	}
	keep, keepDirect := summarize(seconds(via.KeepAlive)), summarize(seconds(dir.KeepAlive))
	fresh, freshDirect := summarize(seconds(via.Fresh)), summarize(seconds(dir.Fresh))
	bulkVia, bulkDirect := summarize(seconds(via.Bulk)), summarize(seconds(dir.Bulk))
	mbps := func(s stats) float64 { return float64(egressBulkBytes) / (1 << 20) / s.Median.Seconds() }
	fmt.Fprintf(os.Stderr, "keep-alive %s | %s, new connection %s | %s, %.0f | %.0f MiB/s\n",
		fmtDur(keep.Median), fmtDur(keepDirect.Median), fmtDur(fresh.Median), fmtDur(freshDirect.Median), mbps(bulkVia), mbps(bulkDirect))

	const baseline = "same client in a sandbox on the bridge network, direct to the same server"
	b.rep.add(row{Op: "egress proxy: plain HTTP GET on a kept-alive connection", Ours: keep, Baseline: baseline, Docker: keepDirect})
	b.rep.add(row{Op: "egress proxy: new connection + GET (agent stream, policy check, dial)", Ours: fresh, Baseline: baseline, Docker: freshDirect})
	b.rep.add(row{
		Op:   fmt.Sprintf("egress proxy: download 64 MiB (%.0f MiB/s through the proxy, %.0f MiB/s direct)", mbps(bulkVia), mbps(bulkDirect)),
		Ours: bulkVia, Baseline: baseline, Docker: bulkDirect,
	})
	return nil
}

// egressRun runs the client once in a fresh sandbox of cfg.
func (b *bench) egressRun(ctx context.Context, mode string, cfg sandbox.Resolved, host string, port int, out *egressTimings) (err error) {
	sb, err := b.newSandboxOn(ctx, b.engine, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.closeSandbox(context.WithoutCancel(ctx), sb)) }()
	res, err := sb.Exec(ctx, sandbox.ExecRequest{
		Argv:      []string{"python3", "-c", egressClient, mode, host, strconv.Itoa(port), strconv.Itoa(b.n)},
		TimeoutMS: 300_000,
	}, nil)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("the client exited with %d: %s", res.ExitCode, res.Stderr)
	}
	if err := json.Unmarshal([]byte(res.Stdout), out); err != nil {
		return fmt.Errorf("reading the client's timings: %w (%q)", err, res.Stdout)
	}
	if out.Bytes != egressBulkBytes {
		return fmt.Errorf("the client downloaded %d bytes, want %d", out.Bytes, egressBulkBytes)
	}
	return nil
}

// bridgeGateway is the host's address on the engine's default bridge network. Docker 20.10
// leaves the default bridge's gateway out of its IPAM config when it chose the address
// itself (a fresh engine does), so the bridge's own interface on this host (the bench runs
// beside its engine) answers then.
func (b *bench) bridgeGateway(ctx context.Context) (string, error) {
	insp, err := b.cli.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspecting the bridge network: %w", err)
	}
	for _, c := range insp.IPAM.Config {
		if ip := net.ParseIP(c.Gateway); ip != nil && ip.To4() != nil {
			return c.Gateway, nil
		}
	}
	name := insp.Options["com.docker.network.bridge.name"]
	if name == "" {
		name = "docker0"
	}
	ip, err := interfaceIPv4(name)
	if err != nil {
		return "", fmt.Errorf("the bridge network names no IPv4 gateway, and its interface %s: %w", name, err)
	}
	return ip, nil
}

// interfaceIPv4 is the first IPv4 address of this host's network interface name.
func interfaceIPv4(name string) (string, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return "", err
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("it has no IPv4 address")
}

func seconds(s []float64) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v * float64(time.Second))
	}
	return out
}
