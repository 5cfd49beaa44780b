// Package notebook runs code in Jupyter kernels, the way a notebook does: state persists
// between cells, the last expression's value is shown, plots come back as images.
//
// It has two layers. Client and Kernel speak jupyter_server's REST API and the kernel
// message protocol (5.3, over the channels websocket) through any dial function, so they
// know nothing about Docker. Sandbox puts them in a notebook sandbox: a hardened container
// with no network whose Jupyter server listens on the container's own loopback, reached
// through the sandbox agent's tunnel (sandbox.AgentSandbox.DialContext).
//
// Everything the server and the kernel send is hostile input (they run the model's code):
// every read is bounded, REST answers here and kernel messages in jsonstream.go.
//
// Reading order: client.go (REST), channels.go (the websocket), jsonstream.go (reading one
// message within its budget), kernel.go (executing a cell), result.go (what a cell
// produced), sandbox.go (the sandbox type and its start).
package notebook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// DialFunc opens a connection to the Jupyter server; sandbox.AgentSandbox.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrKernelNotFound: the server does not know the kernel (it was deleted or the server
	// restarted).
	ErrKernelNotFound = errors.New("kernel not found")
	// ErrKernelDied: the kernel process died (out of memory, a crash, os._exit) and the
	// variables, imports and data it held are lost.
	ErrKernelDied = errors.New("kernel died")
	// ErrConnectionLost: the channels websocket closed under a running request.
	ErrConnectionLost = errors.New("connection to the kernel lost")
	// ErrServer: the Jupyter server refused a request or answered something unexpected.
	ErrServer = errors.New("jupyter server error")
	// ErrMessageTooLarge: the kernel sent a message past the budget of one message (too
	// many bytes, values or levels of nesting). The cell it belonged to fails with it, and
	// the connection with it (the error wraps ErrConnectionLost too); the next cell
	// reconnects.
	ErrMessageTooLarge = errors.New("kernel message too large")
)

// Client speaks jupyter_server's REST API for one server.
type Client struct {
	addr  string // host:port as the dial function understands it
	token string
	dial  DialFunc
	http  *http.Client
}

// NewClient returns a client for the server at addr (host:port) that authenticates with
// token and opens every connection with dial.
func NewClient(addr, token string, dial DialFunc) *Client {
	return &Client{
		addr:  addr,
		token: token,
		dial:  dial,
		http: &http.Client{Transport: &http.Transport{
			DialContext:         dial,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     5 * time.Minute,
			// The tunnel is in memory and the server sends small JSON: compression costs
			// time and saves nothing.
			DisableCompression: true,
			// The server runs inside the sandbox: its headers are bounded like its bodies.
			MaxResponseHeaderBytes: maxResponseHeader,
		}},
	}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// KernelModel is the server's description of a kernel.
type KernelModel struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ExecutionState string `json:"execution_state"`
	Connections    int    `json:"connections"`
}

// Ping checks that the server answers and accepts the token.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/api/kernels", nil, nil)
}

// CreateKernel starts a kernel from the named kernel spec ("" means the server's default).
func (c *Client) CreateKernel(ctx context.Context, name string) (KernelModel, error) {
	var body any = struct{}{}
	if name != "" {
		body = map[string]string{"name": name}
	}
	var k KernelModel
	err := c.do(ctx, http.MethodPost, "/api/kernels", body, &k)
	return k, err
}

// GetKernel describes a kernel; a kernel the server does not know is ErrKernelNotFound.
func (c *Client) GetKernel(ctx context.Context, id string) (KernelModel, error) {
	var k KernelModel
	err := c.do(ctx, http.MethodGet, "/api/kernels/"+url.PathEscape(id), nil, &k)
	return k, err
}

// InterruptKernel sends the kernel SIGINT: a running cell stops with KeyboardInterrupt and
// the kernel's state is kept.
func (c *Client) InterruptKernel(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/api/kernels/"+url.PathEscape(id)+"/interrupt", nil, nil)
}

// RestartKernel replaces the kernel's process, losing its state; it returns once the server
// has restarted it. Clients connected to the old process must reconnect.
func (c *Client) RestartKernel(ctx context.Context, id string) (KernelModel, error) {
	var k KernelModel
	err := c.do(ctx, http.MethodPost, "/api/kernels/"+url.PathEscape(id)+"/restart", nil, &k)
	return k, err
}

// DeleteKernel shuts the kernel down.
func (c *Client) DeleteKernel(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/kernels/"+url.PathEscape(id), nil, nil)
}

// What a REST answer may be; the server runs inside the sandbox, so it is hostile too.
const (
	// maxResponse bounds a response body; kernel models are a few hundred bytes.
	maxResponse = 1 << 20
	// maxResponseHeader bounds a response's headers.
	maxResponseHeader = 64 << 10
	// maxModelField bounds a kernel model's id and name: an id goes into URLs and logs.
	maxModelField = 256
	// maxServerMessage bounds the server's own words in an error.
	maxServerMessage = 200
)

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, rd)
	if err != nil {
		return fmt.Errorf("building %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "token "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("reading %s %s: %w", method, path, err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("%w: %s %s: the answer is over %d MiB", ErrServer, method, path, maxResponse>>20)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && strings.HasPrefix(path, "/api/kernels/"):
		return fmt.Errorf("%s %s: %w", method, path, ErrKernelNotFound)
	case resp.StatusCode >= 300:
		return fmt.Errorf("%w: %s %s: %d %s: %s", ErrServer, method, path, resp.StatusCode, http.StatusText(resp.StatusCode), serverMessage(data))
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%w: decoding %s %s: %w", ErrServer, method, path, err)
		}
	}
	if k, ok := out.(*KernelModel); ok {
		if err := k.check(); err != nil {
			return fmt.Errorf("%w: %s %s: %w", ErrServer, method, path, err)
		}
	}
	return nil
}

// check refuses a model whose id or name could not be a kernel's.
func (k *KernelModel) check() error {
	if len(k.ID) > maxModelField || len(k.Name) > maxModelField {
		return fmt.Errorf("a kernel id or name over %d bytes", maxModelField)
	}
	if strings.ContainsFunc(k.ID+k.Name, unicode.IsControl) {
		return errors.New("a kernel id or name with control characters")
	}
	return nil
}

// serverMessage extracts jupyter_server's error message from a response body: at most
// maxServerMessage bytes of it, control characters replaced.
func serverMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	text := string(body)
	if json.Unmarshal(body, &e) == nil && (e.Message != "" || e.Reason != "") {
		text = e.Message + " " + e.Reason
	}
	if len(text) > 4*maxServerMessage {
		text = text[:4*maxServerMessage]
	}
	text = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text))
	return capString(text, maxServerMessage)
}
