package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// schemaCmd prints every tool's schema as one JSON array.
func schemaCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	formats := make([]string, 0, 3)
	for _, f := range schema.Formats() {
		formats = append(formats, string(f))
	}
	format := fs.String("format", "mcp", "schema format: "+strings.Join(formats, ", "))
	config := fs.String("config", "", "serve's config file: its declared tools are included, and its tools_config picks the tools, as serve offers them")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sf := serveFlags{config: *config}
	cfg, _, err := sf.sandboxConfig()
	if err != nil {
		return err
	}
	defs, err := tools.Enabled(sf.tools, cfg.ToolsConfig)
	if err != nil {
		return err
	}
	list, err := toolSchemas(defs, schema.Format(*format))
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding schemas: %w", err)
	}
	_, err = fmt.Fprintln(out, string(data))
	return err
}

// toolSchemas exports defs in format. For mcp each entry is a tools/list entry
// ({name, description, inputSchema}); the OpenAI formats are the function objects themselves.
func toolSchemas(defs []tools.Def, format schema.Format) ([]json.RawMessage, error) {
	var list []json.RawMessage
	for _, def := range defs {
		raw, err := schema.Export(def.Schema(), format)
		if err != nil {
			return nil, err
		}
		if format == schema.FormatMCP {
			raw, err = json.Marshal(map[string]any{"name": def.Name, "description": def.Description, "inputSchema": raw})
			if err != nil {
				return nil, err
			}
		}
		list = append(list, raw)
	}
	return list, nil
}

// doctorCmd checks what enclave-mcp needs and says how to fix what is missing.
func doctorCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	agentBinary := fs.String("agent-binary", "", agentBinaryFlag)
	var backend backendFlags
	backend.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if backend.name == "kube" {
		return kubeDoctor(ctx, backend, defaultAgent(*agentBinary), out)
	}
	failed := 0
	check := func(ok bool, what, detail, fix string) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(out, "[%s] %-22s %s\n", mark, what, detail)
		if !ok && fix != "" {
			fmt.Fprintf(out, "       fix: %s\n", fix)
		}
	}

	engine, err := sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: defaultAgent(*agentBinary)})
	if err != nil {
		fix := "start the engine (make setup, or dockerd &), or point DOCKER_HOST at one"
		if !errors.Is(err, sandbox.ErrEngine) {
			fix = "build enclave-mcp with CGO_ENABLED=0 (make build), or pass --agent-binary"
		}
		check(false, "engine and agent", err.Error(), fix)
		return fmt.Errorf("%d check(s) failed", failed)
	}
	defer engine.Close()
	report, err := engine.Doctor(ctx)
	if err != nil {
		check(false, "engine", err.Error(), "check that dockerd is running")
		return fmt.Errorf("%d check(s) failed", failed)
	}
	check(true, "engine", fmt.Sprintf("Docker %s, API %s (negotiated %s), %s, cgroup v%s", report.ServerVersion, report.APIVersion, report.ClientAPIVersion, report.OS, report.CgroupVersion), "")
	check(true, "agent binary", report.AgentBinary+" (static)", "")
	transport := report.AgentTransport + " (each agent's own connection to the server)"
	if report.AgentTransportWhy != "" {
		transport = report.AgentTransport + " (" + report.AgentTransportWhy + ")"
	}
	check(true, "agent transport", transport, "")
	for _, img := range report.Images {
		if img.Tag == sandbox.DefaultNotebookImage && img.State == sandbox.ImageMissing {
			fmt.Fprintf(out, "[note] %-22s missing (only notebook sandboxes need it)\n", "image "+img.Tag)
			continue
		}
		if img.State == sandbox.ImageOutdated {
			fmt.Fprintf(out, "[note] %-22s outdated (built from an older spec; rebuild: enclave-mcp images build --missing)\n", "image "+img.Tag)
			continue
		}
		check(img.State == sandbox.ImageCurrent, "image "+img.Tag, string(img.State), "enclave-mcp images build")
	}
	runtimes := strings.Join(report.Runtimes, ", ")
	check(true, "runtimes", runtimes, "")
	if !report.HasRunsc {
		fmt.Fprintln(out, "       note: gVisor (runsc) is not installed; for a stronger boundary: apt-get install runsc, register it with dockerd, then serve --runtime runsc")
	}
	_, err = exec.LookPath("debootstrap")
	check(err == nil, "debootstrap", map[bool]string{true: "present (images build works)", false: "missing"}[err == nil], "apt-get install debootstrap")
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	fmt.Fprintln(out, "all checks passed")
	return nil
}

// imagesCmd builds the default images ("images build"), or the ones named with --image, or
// every image with --all.
func imagesCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintln(os.Stderr, "Usage: enclave-mcp images build [--missing] [--mirror URL] [--image TAG]... [--all]")
		return errUsage
	}
	fs := flag.NewFlagSet("images build", flag.ContinueOnError)
	mirror := fs.String("mirror", sandbox.DefaultMirror, "Debian mirror")
	missing := fs.Bool("missing", false, "build only the images the engine does not have, or has from an older spec")
	all := fs.Bool("all", false, "build every image, the optional ones ("+strings.Join(specTags(sandbox.OptionalImageSpecs("")), ", ")+") too")
	var named tagList
	fs.Var(&named, "image", "build only this image (repeatable): "+strings.Join(specTags(allImageSpecs("")), ", "))
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	specs, err := imagesToBuild(*mirror, named, *all)
	if err != nil {
		return err
	}
	engine, err := sandbox.NewDocker(ctx, sandbox.DockerOptions{})
	if err != nil {
		return err
	}
	defer engine.Close()
	for _, spec := range specs {
		if *missing {
			state, err := engine.ImageState(ctx, spec)
			if err != nil {
				return err
			}
			if state == sandbox.ImageCurrent {
				fmt.Fprintf(os.Stderr, "==> %s: present, skipped\n", spec.Tag)
				continue
			}
			fmt.Fprintf(os.Stderr, "==> %s: %s, building\n", spec.Tag, state)
		}
		if err := engine.BuildImage(ctx, spec, os.Stderr); err != nil {
			return err
		}
	}
	return nil
}

// imagesToBuild picks the specs "images build" makes: the named ones, every one with all,
// else the defaults.
func imagesToBuild(mirror string, named []string, all bool) ([]sandbox.ImageSpec, error) {
	switch {
	case all && len(named) > 0:
		return nil, errors.New("images build: --all and --image exclude each other")
	case all:
		return allImageSpecs(mirror), nil
	case len(named) == 0:
		return sandbox.DefaultImageSpecs(mirror), nil
	}
	known := allImageSpecs(mirror)
	var specs []sandbox.ImageSpec
	for _, tag := range named {
		i := slices.IndexFunc(known, func(s sandbox.ImageSpec) bool { return s.Tag == tag })
		if i < 0 {
			return nil, fmt.Errorf("images build: unknown image %q; known images: %s", tag, strings.Join(specTags(known), ", "))
		}
		specs = append(specs, known[i])
	}
	return specs, nil
}

// allImageSpecs are the default images, then the optional ones.
func allImageSpecs(mirror string) []sandbox.ImageSpec {
	return append(sandbox.DefaultImageSpecs(mirror), sandbox.OptionalImageSpecs(mirror)...)
}

func specTags(specs []sandbox.ImageSpec) []string {
	tags := make([]string, len(specs))
	for i, s := range specs {
		tags[i] = s.Tag
	}
	return tags
}

// tagList is the repeatable --image flag.
type tagList []string

func (l *tagList) String() string     { return strings.Join(*l, ",") }
func (l *tagList) Set(v string) error { *l = append(*l, v); return nil }
