// Command kube is one binary holding the Kubernetes components the test cluster runs
// (scripts/kube-cluster.sh): kube-apiserver, kubelet, kube-scheduler, kube-controller-manager,
// kube-proxy and kubectl, built from the Go module proxy. One link instead of six: the
// components share most of their packages, so the multi-call binary is a fraction of the six
// binaries' size.
//
// The component is chosen by the name the binary is called by (a symlink named kubelet) or by
// the first argument (kube kubelet --config ...).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // CronJob time zones (kube-apiserver, kube-controller-manager)

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // the JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	"k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// components maps a component's name to its command, built only when chosen.
var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-proxy":              proxy.NewProxyCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
}

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if !known(name) && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	if name == "kubectl" {
		os.Args = append([]string{"kubectl"}, args...)
		command := cmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return
	}
	build, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube: unknown component %q: call it as one of %s (or pass the name as the first argument)\n",
			name, strings.Join(names(), ", "))
		os.Exit(2)
	}
	command := build()
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}

func known(name string) bool {
	_, ok := components[name]
	return ok || name == "kubectl"
}

func names() []string {
	out := []string{"kubectl"}
	for name := range components {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
