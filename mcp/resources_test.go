package mcp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"image/png"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// readResource reads uri through c; err is the JSON-RPC error, if any.
func readResource(t *testing.T, c *mcpclient.Client, uri string) (mcpgo.ResourceContents, error) {
	t.Helper()
	req := mcpgo.ReadResourceRequest{}
	req.Params.URI = uri
	res, err := c.ReadResource(t.Context(), req)
	if err != nil {
		return nil, err
	}
	if len(res.Contents) != 1 {
		t.Fatalf("read %s: %d contents, want 1", uri, len(res.Contents))
	}
	return res.Contents[0], nil
}

// listResources lists c's resources by URI.
func listResources(t *testing.T, c *mcpclient.Client) map[string]mcpgo.Resource {
	t.Helper()
	res, err := c.ListResources(t.Context(), mcpgo.ListResourcesRequest{})
	if err != nil {
		t.Fatalf("resources/list: %v", err)
	}
	out := map[string]mcpgo.Resource{}
	for _, r := range res.Resources {
		out[r.URI] = r
	}
	return out
}

// TestResourcesWithoutSandbox: the server advertises resources and the workspace template;
// before its first tool call a session lists none, and a read says why instead of starting
// a sandbox. No engine is needed: nothing may reach one.
func TestResourcesWithoutSandbox(t *testing.T) {
	t.Parallel()
	f := &fakesandbox.Factory{}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: f.Creator(sandbox.TypeDocker)},
	})
	t.Cleanup(func() { _ = m.Close(context.WithoutCancel(t.Context())) })
	srv, err := mcp.New(mcp.Config{Manager: m, Tools: tools.All()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := mcpclient.NewInProcessClient(srv.MCPServer())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "resources-test", Version: "1"}
	ir, err := c.Initialize(t.Context(), init)
	if err != nil {
		t.Fatal(err)
	}
	if ir.Capabilities.Resources == nil {
		t.Fatal("the resources capability is not advertised")
	}
	templates, err := c.ListResourceTemplates(t.Context(), mcpgo.ListResourceTemplatesRequest{})
	if err != nil || len(templates.ResourceTemplates) != 1 {
		t.Fatalf("resources/templates/list: %+v, %v; want the workspace template", templates, err)
	}
	if got := templates.ResourceTemplates[0].URITemplate.Raw(); got != "sandbox://workspace/{+path}" {
		t.Errorf("template %q", got)
	}
	if list := listResources(t, c); len(list) != 0 {
		t.Errorf("resources before any tool call: %v", list)
	}
	// An encoded name still reaches the template's handler (not "handler not found").
	_, err = readResource(t, c, "sandbox://workspace/out/a%20b.txt")
	if err == nil || !strings.Contains(err.Error(), "no sandbox yet") {
		t.Errorf("read before any tool call: %v; want the no-sandbox refusal", err)
	}
	if n := len(f.Created()); n != 0 {
		t.Errorf("listing and reading created %d sandboxes", n)
	}
}

// resourceServer is an MCP server on a real engine, wired as serve wires it (one sandbox of
// the notebook image per session), with a 1 MiB resource size cap, also served over
// streamable HTTP; it returns the server, its manager and the HTTP URL.
func resourceServer(t *testing.T) (*mcp.Server, *sandbox.Manager, string) {
	t.Helper()
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultNotebookImage)
	nb := sandbox.Config{Image: sandbox.DefaultNotebookImage, Runtime: testenv.Runtime()}
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{session.SessionType: nb},
		Creators: map[sandbox.Type]sandbox.Creator{
			sandbox.TypeDocker:  sandbox.NewCreator(engine, sandbox.TypeDocker),
			session.SessionType: notebook.LazyCreator(engine, session.SessionType, notebook.Options{}),
		},
	})
	t.Cleanup(func() { _ = manager.Close(context.Background()) })
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, DefaultTimeout: 60, MaxResourceBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	url := serveStreamable(t, srv, mcp.HTTPOptions{}, func(next http.Handler) http.Handler { return httpapi.RequireToken(httpTestToken, next) })
	return srv, manager, url
}

// TestIntegrationWorkspaceResources: a session's plot (python_executor with matplotlib, the
// session's default notebook image) is listed and read as image/png with its exact bytes; a
// text file reads as text; file_operation's write links to what it wrote; a notebook plot
// saved with savefig is listed; hidden files are not; a path out of the workspace and a file
// over the size cap are refused with messages that say so. A second session sees none of
// it: before its first call it has no sandbox (and listing or reading does not make one),
// after, only its own workspace.
func TestIntegrationWorkspaceResources(t *testing.T) {
	srv, manager, url := resourceServer(t)
	a, err := mcpclient.NewStreamableHttpClient(url+"/mcp", transport.WithHTTPHeaders(authHeader()))
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, a)
	t.Cleanup(func() { _ = a.Close() })
	b := connect(t, srv) // in process, the same server

	mustRun := func(c *mcpclient.Client, tool string, args map[string]any) *mcpgo.CallToolResult {
		t.Helper()
		res := callTool(t, c, tool, args, nil)
		if res.IsError {
			t.Fatalf("%s: %s", tool, textOf(res))
		}
		return res
	}
	out := mustRun(a, "python_executor", map[string]any{"code": `import hashlib, os, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 3, 2])
plt.savefig("plot.png")
os.makedirs("data", exist_ok=True)
open("data/points.csv", "w").write("x,y\n1,3\n")
open(".hidden.txt", "w").write("not listed")
open("big.bin", "wb").write(b"\0" * (3 << 19))
print(hashlib.sha256(open("plot.png", "rb").read()).hexdigest())`})
	plotSum := strings.TrimSpace(textOf(out))

	write := mustRun(a, "file_operation", map[string]any{"operation": "write", "file_path": "notes.txt", "content": "résumé\n"})
	var link *mcpgo.ResourceLink
	for _, c := range write.Content {
		if l, ok := c.(mcpgo.ResourceLink); ok {
			link = &l
		}
	}
	if link == nil || link.URI != "sandbox://workspace/notes.txt" || link.MIMEType != "text/plain" {
		t.Errorf("file_operation write: resource link %+v; want sandbox://workspace/notes.txt, text/plain", link)
	}
	mustRun(a, "notebook_executor", map[string]any{"code": `import matplotlib.pyplot as plt
plt.figure(); plt.bar([1, 2], [3, 4]); plt.savefig("nb_plot.png")`})

	list := listResources(t, a)
	for uri, mime := range map[string]string{
		"sandbox://workspace/plot.png":        "image/png",
		"sandbox://workspace/nb_plot.png":     "image/png",
		"sandbox://workspace/notes.txt":       "text/plain",
		"sandbox://workspace/data/points.csv": "text/csv",
	} {
		if r, ok := list[uri]; !ok || r.MIMEType != mime {
			t.Errorf("listing: %s is %+v (listed %v); want it, as %s", uri, r, ok, mime)
		}
	}
	for uri := range list {
		if strings.Contains(uri, "/.") {
			t.Errorf("listing holds a hidden name: %s", uri)
		}
	}

	c, err := readResource(t, a, "sandbox://workspace/plot.png")
	if err != nil {
		t.Fatalf("reading the plot: %v", err)
	}
	blob, ok := c.(mcpgo.BlobResourceContents)
	if !ok || blob.MIMEType != "image/png" {
		t.Fatalf("the plot read as %T %+v; want an image/png blob", c, c)
	}
	data, err := base64.StdEncoding.DecodeString(blob.Blob)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != plotSum {
		t.Errorf("the plot's bytes differ: sha256 %x, the sandbox's %s", sum, plotSum)
	}
	if _, err := png.Decode(bytes.NewReader(data)); err != nil {
		t.Errorf("the plot is no PNG: %v", err)
	}
	c, err = readResource(t, a, "sandbox://workspace/notes.txt")
	if text, ok := c.(mcpgo.TextResourceContents); err != nil || !ok || text.Text != "résumé\n" || text.MIMEType != "text/plain" {
		t.Errorf("notes.txt read as %+v, %v; want its text", c, err)
	}

	for _, tc := range []struct{ name, uri, want string }{
		{"out of the workspace", "sandbox://workspace/../etc/passwd", "leads outside the workspace"},
		{"encoded dot-dot", "sandbox://workspace/data/%2E%2E/%2E%2E/etc/passwd", "leads outside the workspace"},
		{"over the size cap", "sandbox://workspace/big.bin", "1572864 bytes, larger than the 1 MiB limit of resources/read"},
		{"missing", "sandbox://workspace/nope.txt", "no such file"},
		{"a directory", "sandbox://workspace/data", "is a directory"},
	} {
		if _, err := readResource(t, a, tc.uri); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error with %q", tc.name, err, tc.want)
		}
	}

	// The second session: nothing before its first call, and no sandbox made for it.
	if list := listResources(t, b); len(list) != 0 {
		t.Errorf("the second session lists %d resources before its first call", len(list))
	}
	if _, err := readResource(t, b, "sandbox://workspace/notes.txt"); err == nil || !strings.Contains(err.Error(), "no sandbox yet") {
		t.Errorf("the second session read the first's file: %v", err)
	}
	if n := len(manager.List()); n != 1 {
		t.Errorf("%d sandboxes after the second session listed and read; want the first session's one", n)
	}
	mustRun(b, "shell_executor", map[string]any{"command": "echo mine > mine.txt"})
	if _, err := readResource(t, b, "sandbox://workspace/notes.txt"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("the second session read the first's file: %v", err)
	}
	if got := slices.Sorted(maps.Keys(listResources(t, b))); !slices.Equal(got, []string{"sandbox://workspace/mine.txt"}) {
		t.Errorf("the second session lists %v; want only its own mine.txt", got)
	}
}
