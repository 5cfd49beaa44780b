package main

import (
	"log/slog"

	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// notebookConfig is the config file's "notebook" section: docker_notebook sandboxes take
// every setting of "sandbox" except the image, which is the notebook image unless set
// here. A Jupyter image of your own goes here, with the command that starts its server
// when the bundled launcher (python3 with jupyter_server) does not fit it.
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
