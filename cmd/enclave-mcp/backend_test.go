package main

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

// TestBackendFlagsRefuse: a backend that cannot be had is refused with what would do.
func TestBackendFlagsRefuse(t *testing.T) {
	agent := testenv.AgentBinary(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown backend", []string{"--backend", "nomad"}, "want docker, kube or process"},
		{"process not allowed", []string{"--backend", "process"}, "--allow-process-backend"},
		{"kubeconfig missing", []string{"--backend", "kube", "--kubeconfig", filepath.Join(t.TempDir(), "none")}, "loading the kubeconfig"},
		{"pull policy", []string{"--backend", "kube", "--kube-pull-policy", "Sometimes"}, "want Never, IfNotPresent or Always"},
		{"request fraction", []string{"--backend", "kube", "--kube-request-fraction", "2"}, "want a share of the limits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b backendFlags
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			b.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			_, err := b.open(t.Context(), agent, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
