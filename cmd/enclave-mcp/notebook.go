package main

// notebookConfig is the config file's "notebook" section: docker_notebook sandboxes take
// every setting of "sandbox" except the image, which is the notebook image unless set
// here. A Jupyter image of your own goes here, with the command that starts its server
// when the bundled launcher (python3 with jupyter_server) does not fit it. MCP sessions use
// the command, port and kernel too, and the image when "sandbox" names none (session.Sandboxes.SessionConfig).
type notebookConfig struct {
	Image string `json:"image"`
	// Command starts the server; it must serve on 127.0.0.1:Port and take its token from
	// JUPYTER_TOKEN.
	Command []string `json:"command"`
	Port    int      `json:"port"`
	Kernel  string   `json:"kernel"`
}
