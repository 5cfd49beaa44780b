package main

import (
	"log/slog"

	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// notebookConfig is the config file's "notebook" section: docker_notebook sandboxes take
// every setting of "sandbox" except the image, which is the notebook image unless set
// here. A Jupyter image of your own goes here, with the command that starts its server
// when the bundled launcher (python3 with jupyter_server) does not fit it. MCP sessions use
// the command, port and kernel too, and the image when "sandbox" names none (sessionConfig).
type notebookConfig struct {
	Image string `json:"image"`
	// Command starts the server; it must serve on 127.0.0.1:Port and take its token from
	// JUPYTER_TOKEN.
	Command []string `json:"command"`
	Port    int      `json:"port"`
	Kernel  string   `json:"kernel"`
}

// notebookSetup derives the notebook sandboxes' config and options from the docker ones.
func notebookSetup(base sandbox.Config, nc notebookConfig, log *slog.Logger) (sandbox.Config, notebook.Options) {
	cfg := base
	cfg.Image = sandbox.DefaultNotebookImage
	if nc.Image != "" {
		cfg.Image = nc.Image
	}
	return cfg, notebook.Options{Command: nc.Command, Port: nc.Port, KernelName: nc.Kernel, Logger: log}
}

// sessionConfig is the config an MCP session's one sandbox starts from: every tool of the
// session runs in it, the notebook's kernel included. An image the operator named in
// "sandbox" is used as it is (without Jupyter, the notebook tools then say so when called).
// Otherwise, when a notebook tool is enabled, the session needs an image that runs every
// tool: the "notebook" section's image, else the notebook image (python3 with Jupyter,
// numpy and matplotlib); with the notebook tools disabled, the plain default image.
func sessionConfig(base sandbox.Config, nc notebookConfig, enabled []tools.Def) sandbox.Config {
	cfg := base
	if cfg.Image != "" || !notebookEnabled(enabled) {
		return cfg
	}
	cfg.Image = sandbox.DefaultNotebookImage
	if nc.Image != "" {
		cfg.Image = nc.Image
	}
	return cfg
}

// notebookEnabled reports whether any of the tools runs in a notebook kernel.
func notebookEnabled(enabled []tools.Def) bool {
	for _, def := range enabled {
		if def.Sandbox == sandbox.TypeNotebook {
			return true
		}
	}
	return false
}
