// Command proxy runs a real token-protected enclave-mcp HTTP server for the MCP conformance
// suite (scripts/conformance.sh), which sends no credentials: it starts `BIN serve --http
// 127.0.0.1:PORT` with a random token, waits until the server answers, and puts a reverse
// proxy in front of it that adds the token to every request. It prints the proxy's MCP URL
// on its first line of stdout and runs until SIGINT or SIGTERM, then stops the server.
//
// Usage: proxy -bin bin/enclave-mcp [-log FILE] [-- extra serve flags]
//
// The proxy keeps the client's Host header, so the server's own DNS-rebinding check (the
// perimeter's allowed hosts) sees what the suite sent.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", "bin/enclave-mcp", "the enclave-mcp binary")
	logPath := flag.String("log", "", "write the server's log here (default: stderr)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	port, err := freePort()
	if err != nil {
		return err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	backend := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}

	// The proxy listens first: the server is told the proxy's origin. Its perimeter refuses
	// every browser Origin it is not given (a page on another localhost port is no safer than
	// any other), and the suite's DNS-rebinding scenario sends the Origin of the URL it tests.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	front := ln.Addr().(*net.TCPAddr).Port
	origins := fmt.Sprintf("http://127.0.0.1:%d,http://localhost:%d", front, front)

	// The token goes by environment, not argv, where ps would show it. No warm spares: the
	// suite's calls need no sandbox, and a run should leave the engine as it found it.
	args := append([]string{"serve", "--http", backend.Host, "--warm", "0", "--allowed-origins", origins}, flag.Args()...)
	srv := exec.Command(*bin, args...)
	srv.Env = append(os.Environ(), "ENCLAVE_MCP_TOKEN="+token)
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			return err
		}
		defer f.Close()
		srv.Stdout, srv.Stderr = f, f
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", *bin, err)
	}
	exited := make(chan struct{}) // closed when the server has exited, waitErr set
	var waitErr error
	go func() { waitErr = srv.Wait(); close(exited) }()
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
	}()
	if err := waitHealthy(ctx, backend.String()+"/health", exited); err != nil {
		if errors.Is(err, errExited) {
			return fmt.Errorf("%w: %v", err, waitErr)
		}
		return err
	}

	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("Authorization", "Bearer "+token)
		},
		FlushInterval: -1, // SSE: every event as it comes
	}
	fmt.Printf("http://%s/mcp\n", ln.Addr())
	hs := &http.Server{Handler: wholeBody(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case <-exited:
		return fmt.Errorf("the server exited: %v", waitErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}

// maxBody caps a request body the proxy holds: the server's own default limit (--max-body).
const maxBody = 8 << 20

// wholeBody reads a request's body whole before next forwards it. The reverse proxy's
// transport otherwise copies the body from the client's connection while the server
// answers, and a server that answers at once (every MCP answer here takes about a
// millisecond) can have its answer copied back before that copy has read the body's end:
// net/http then refuses further reads of a body whose response has begun (HTTP/1.x), the
// transport takes the failed read for a broken request and closes the server connection
// mid-answer, and the client sees its response cut ("terminated", or no end at all). On a
// loaded machine, where the copying goroutine waits its turn, that cut a scenario in about
// one run of three; the proxy logged "ReverseProxy read error during body copy: use of
// closed network connection".
func wholeBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "proxy: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body, r.ContentLength = http.NoBody, 0
		if len(body) > 0 {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

// freePort asks the kernel for a free loopback port. Another process could take it before
// the server listens; the server then fails to start and the run fails loudly.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var errExited = errors.New("the server exited before answering")

// waitHealthy polls url until it answers 200, the server exits, or 60 s pass.
func waitHealthy(ctx context.Context, url string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return errors.New("the server did not answer " + url + " within 60 s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
