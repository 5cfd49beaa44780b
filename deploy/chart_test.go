package deploy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

func TestChartLints(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--values", fullValues},
		{"--set", "token.value=an-operator-token", "--set", "service.type=NodePort", "--set", "service.nodePort=30800"},
	} {
		out, err := helm(t, append([]string{"lint", "--strict", chartDir}, args...)...)
		if err != nil {
			t.Errorf("helm lint --strict %s: %v", strings.Join(args, " "), err)
			continue
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint --strict %s did not pass:\n%s", strings.Join(args, " "), out)
		}
	}
	// ci/*-values.yaml files are the chart's test values: each must be one the tests render.
	files, _ := filepath.Glob(chartDir + "/ci/*-values.yaml")
	if !slices.Equal(files, []string{fullValues}) {
		t.Errorf("ci values files %v: render and check each here (only %s is)", files, fullValues)
	}
}

func TestChartDefaults(t *testing.T) {
	r := render(t)
	if got, want := r.kinds(), []string{"ConfigMap", "Deployment", "Secret", "Service"}; !slices.Equal(got, want) {
		t.Fatalf("rendered %v, want %v", got, want)
	}
	d, c := r.deployment(t)
	pod := d.Template.Spec

	if d.Replicas != 1 {
		t.Errorf("replicas %d, want 1", d.Replicas)
	}
	if c.Image != "enclave/enclave-mcp:latest" || c.ImagePullPolicy != "IfNotPresent" {
		t.Errorf("image %s (%s), want enclave/enclave-mcp:latest (IfNotPresent): built on the node, never pulled", c.Image, c.ImagePullPolicy)
	}
	wantArgs := []string{
		"serve", "--http", ":8000", "--config", "/etc/enclave-mcp/config.json",
		"--log-level", "info", "--log-format", "json",
		"--session-size", "50M", "--session-idle=3600s",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
	}
	token := secretToken(t, r)
	if len(token) != 48 {
		t.Errorf("the generated token has %d characters, want 48", len(token))
	}
	checkTokenFromSecret(t, r, c, defaultPrefix+"-token", "token", token)
	if _, ok := c.env("DOCKER_HOST"); ok {
		t.Error("DOCKER_HOST is set without docker.host: the mounted socket is the engine")
	}

	// The node's engine, through its socket.
	if v := pod.volume(t, "docker-socket"); v.HostPath == nil || v.HostPath.Path != "/var/run/docker.sock" || v.HostPath.Type != "Socket" {
		t.Errorf("docker-socket volume %+v, want hostPath /var/run/docker.sock of type Socket", v)
	}
	if got := c.mount("docker-socket"); got != "/var/run/docker.sock" {
		t.Errorf("the socket is mounted at %q, want /var/run/docker.sock", got)
	}
	if v := pod.volume(t, "config"); v.ConfigMap == nil || v.ConfigMap.Name != defaultPrefix {
		t.Errorf("config volume %+v, want the ConfigMap %s", v, defaultPrefix)
	}
	if got := c.mount("config"); got != "/etc/enclave-mcp" {
		t.Errorf("the config is mounted at %q, want /etc/enclave-mcp (--config /etc/enclave-mcp/config.json)", got)
	}
	if v := pod.volume(t, "tmp"); v.EmptyDir == nil || c.mount("tmp") != "/tmp" {
		t.Errorf("/tmp is not a writable emptyDir: volume %+v mounted at %q", v, c.mount("tmp"))
	}
	if got := string(r.config(t)["sandbox"]); got != "" {
		t.Errorf("the default config sets sandbox %s: the server's defaults should apply (MCP sessions need the notebook image)", got)
	}
	if text := strings.TrimSpace(r["ConfigMap"].Data["config.json"]); text != "{}" {
		t.Errorf("default config.json %s, want {} (the server's defaults)", text)
	}
	if d.Template.Metadata.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a changed config would not roll the pods")
	}

	// Probes on /health, which needs no token.
	for name, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" || p.HTTPGet.Port != "http" {
			t.Errorf("%s probe %+v, want GET /health on port http", name, p)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8000 {
		t.Errorf("ports %+v, want http 8000", c.Ports)
	}

	// Hardening: no Kubernetes API token, no capabilities, a read-only root.
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: the server never talks to the Kubernetes API")
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false")
	}
	if c.SecurityContext["readOnlyRootFilesystem"] != true || c.SecurityContext["allowPrivilegeEscalation"] != false ||
		!reflect.DeepEqual(c.SecurityContext["capabilities"], map[string]any{"drop": []any{"ALL"}}) {
		t.Errorf("container securityContext %v, want a read-only root, no privilege escalation, every capability dropped", c.SecurityContext)
	}
	if _, ok := pod.SecurityContext["runAsUser"]; ok {
		t.Errorf("pod securityContext %v sets runAsUser without docker.socketGroup: the default is root, which the socket needs", pod.SecurityContext)
	}
	if c.Resources != nil {
		t.Errorf("resources %v without deployment.resources", c.Resources)
	}

	s := r.service(t)
	if s.Type != "ClusterIP" || s.ClusterIP != "" || s.SessionAffinity != "ClientIP" {
		t.Errorf("service type %s clusterIP %q sessionAffinity %q, want ClusterIP, assigned, ClientIP", s.Type, s.ClusterIP, s.SessionAffinity)
	}
	if len(s.Ports) != 1 || s.Ports[0].Port != 8000 || s.Ports[0].TargetPort != "http" {
		t.Errorf("service ports %+v, want 8000 to http", s.Ports)
	}
}

func TestChartEveryOption(t *testing.T) {
	r := render(t, "--values", fullValues)
	// token.existingSecret: the chart makes no Secret.
	if got, want := r.kinds(), []string{"ConfigMap", "Deployment", "Service"}; !slices.Equal(got, want) {
		t.Fatalf("rendered %v, want %v (no Secret with token.existingSecret)", got, want)
	}
	const prefix = release + "-sandboxes" // nameOverride
	d, c := r.deployment(t)
	pod := d.Template.Spec
	if r["Deployment"].Metadata.Name != prefix || r["Deployment"].Metadata.Labels["app.kubernetes.io/name"] != "sandboxes" {
		t.Errorf("Deployment %s labels %v: nameOverride not applied", r["Deployment"].Metadata.Name, r["Deployment"].Metadata.Labels)
	}

	// sandbox_runtime's values.
	if d.Replicas != 3 {
		t.Errorf("replicas %d, want 3", d.Replicas)
	}
	wantResources := map[string]map[string]string{
		"requests": {"cpu": "250m", "memory": "256Mi"},
		"limits":   {"cpu": "2", "memory": "2Gi"},
	}
	if !reflect.DeepEqual(c.Resources, wantResources) {
		t.Errorf("resources %v, want %v", c.Resources, wantResources)
	}
	s := r.service(t)
	if s.ClusterIP != "None" || s.Type != "ClusterIP" || s.SessionAffinity != "" {
		t.Errorf("service clusterIP %q type %s sessionAffinity %q, want a headless ClusterIP service without affinity", s.ClusterIP, s.Type, s.SessionAffinity)
	}
	if len(s.Ports) != 1 || s.Ports[0].Port != 9000 || s.Ports[0].NodePort != 0 {
		t.Errorf("service ports %+v, want 9000 and no node port", s.Ports)
	}
	if r["Service"].Metadata.Annotations["example.com/team"] != "agents" {
		t.Errorf("service annotations %v", r["Service"].Metadata.Annotations)
	}
	wantArgs := []string{
		"serve", "--http", ":8080", "--config", "/etc/enclave-mcp/config.json",
		"--log-level", "debug", "--log-format", "text",
		"--session-size", "50M", "--session-idle=900s", "--session-max-size", "2G",
		"--max-sandboxes=50", "--warm=4",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports %+v, want 8080", c.Ports)
	}

	// Ours: the token, the image, the engine.
	checkTokenFromSecret(t, r, c, "enclave-mcp-operator-token", "api-token", "")
	if c.Image != "registry.example.com/enclave/enclave-mcp:v1.2.3" || c.ImagePullPolicy != "Never" {
		t.Errorf("image %s (%s)", c.Image, c.ImagePullPolicy)
	}
	if !reflect.DeepEqual(pod.ImagePullSecrets, []map[string]string{{"name": "regcred"}}) {
		t.Errorf("imagePullSecrets %v", pod.ImagePullSecrets)
	}
	if v := pod.volume(t, "docker-socket"); v.HostPath == nil || v.HostPath.Path != "/run/docker.sock" || c.mount("docker-socket") != "/run/docker.sock" {
		t.Errorf("docker-socket volume %+v mounted at %q, want /run/docker.sock", v, c.mount("docker-socket"))
	}
	// docker.socketGroup: non-root, with the socket's group.
	for k, want := range map[string]any{"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": true, "supplementalGroups": []any{999}, "fsGroup": 10001} {
		if got := pod.SecurityContext[k]; !reflect.DeepEqual(jsonNumber(got), jsonNumber(want)) {
			t.Errorf("pod securityContext %s = %v, want %v", k, got, want)
		}
	}

	// The config file: images, policy, sandbox defaults, sessions, tools, in the server's types.
	cfg := r.config(t)
	var sb sandbox.Config
	if err := decodeStrict(cfg["sandbox"], &sb); err != nil {
		t.Errorf("config sandbox %s: %v", cfg["sandbox"], err)
	}
	if sb.Image != "enclave/python:bookworm" || sb.MemoryLimit != "512m" || sb.Timeout != 60 {
		t.Errorf("config sandbox %+v, want images.sandbox and the sandbox values", sb)
	}
	var policy sandbox.Policy
	if err := json.Unmarshal(cfg["policy"], &policy); err != nil {
		t.Errorf("config policy %s: %v", cfg["policy"], err)
	}
	if policy.MaxMemory != 4<<30 || policy.MaxCPU != 2 || len(policy.AllowedImages) != 3 {
		t.Errorf("config policy %+v", policy)
	}
	var notebook struct {
		Image string `json:"image"`
	}
	if err := decodeStrict(cfg["notebook"], &notebook); err != nil || notebook.Image != "enclave/notebook:bookworm" {
		t.Errorf("config notebook %s (%v), want the image of images.notebook", cfg["notebook"], err)
	}
	var sessions struct {
		Image           string   `json:"image"`
		AllowedCommands []string `json:"allowed_commands"`
		ScriptTypes     map[string]struct {
			Extension string   `json:"extension"`
			Argv      []string `json:"argv"`
		} `json:"script_types"`
		Languages []string `json:"languages"`
	}
	if err := decodeStrict(cfg["sessions"], &sessions); err != nil {
		t.Errorf("config sessions %s: %v", cfg["sessions"], err)
	}
	if sessions.Image != "enclave/polyglot:bookworm" || !slices.Equal(sessions.AllowedCommands, []string{"ls", "cat", "wc", "python3"}) ||
		!slices.Equal(sessions.ScriptTypes["ruby"].Argv, []string{"ruby", "{file}"}) || !slices.Equal(sessions.Languages, []string{"c", "cpp", "go"}) {
		t.Errorf("config sessions %s", cfg["sessions"])
	}
	var declared []tools.CommandTool
	if err := decodeStrict(cfg["tools"], &declared); err != nil {
		t.Fatalf("config tools %s: %v", cfg["tools"], err)
	}
	if _, err := tools.AddCommands(tools.All(), declared); err != nil {
		t.Errorf("the server would refuse the declared tools: %v", err)
	}
	for k := range cfg {
		if !slices.Contains([]string{"sandbox", "notebook", "policy", "sessions", "tools"}, k) {
			t.Errorf("config section %q: the server refuses unknown sections", k)
		}
	}

	// Pass-through values.
	if pod.NodeSelector["enclave-mcp/docker"] != "true" || len(pod.Tolerations) != 1 || pod.Affinity["podAntiAffinity"] == nil {
		t.Errorf("scheduling: nodeSelector %v tolerations %v affinity %v", pod.NodeSelector, pod.Tolerations, pod.Affinity)
	}
	if pod.TerminationGracePeriodSeconds != 60 {
		t.Errorf("terminationGracePeriodSeconds %d, want 60", pod.TerminationGracePeriodSeconds)
	}
	if e, ok := c.env("TZ"); !ok || e.Value != "UTC" {
		t.Error("extraEnv TZ=UTC is missing")
	}
	if v := pod.volume(t, "tokens"); v.Secret == nil || c.mount("tokens") != "/etc/enclave-mcp-tokens" {
		t.Errorf("extra volume tokens %+v mounted at %q", v, c.mount("tokens"))
	}
	if d.Template.Metadata.Annotations["example.com/scrape"] != "true" || d.Template.Metadata.Labels["tier"] != "sandbox" ||
		r["Deployment"].Metadata.Annotations["example.com/owner"] != "platform" {
		t.Errorf("annotations and labels: pod %v %v, deployment %v", d.Template.Metadata.Annotations, d.Template.Metadata.Labels, r["Deployment"].Metadata.Annotations)
	}
}

func TestChartTokenValue(t *testing.T) {
	const token = "s3cret-Operator-Token_0123456789"
	r := render(t, "--set", "token.value="+token)
	if got := secretToken(t, r); got != token {
		t.Errorf("the Secret holds %q, want token.value", got)
	}
	_, c := r.deployment(t)
	checkTokenFromSecret(t, r, c, defaultPrefix+"-token", "token", token)
	// Not even its hash: pod annotations are widely readable, and a weak token's could be
	// guessed offline.
	sum := sha256.Sum256([]byte(token))
	if strings.Contains(r["Deployment"].Text, hex.EncodeToString(sum[:])) {
		t.Error("the Deployment holds the token's SHA-256")
	}
}

func TestChartRemoteEngine(t *testing.T) {
	r := render(t, "--set", "docker.socketPath=", "--set", "docker.host=tcp://engine.example.com:2376")
	d, c := r.deployment(t)
	if e, ok := c.env("DOCKER_HOST"); !ok || e.Value != "tcp://engine.example.com:2376" {
		t.Errorf("DOCKER_HOST %+v, want docker.host", e)
	}
	for _, v := range d.Template.Spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s mounts the node's %s without docker.socketPath", v.Name, v.HostPath.Path)
		}
	}
}

func TestChartNodePortService(t *testing.T) {
	s := render(t, "--set", "service.type=NodePort", "--set", "service.nodePort=30800", "--set", "service.sessionAffinity=None").service(t)
	if s.Type != "NodePort" || len(s.Ports) != 1 || s.Ports[0].NodePort != 30800 || s.SessionAffinity != "None" {
		t.Errorf("service %+v, want NodePort 30800 without affinity", s)
	}
}

func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string // in helm's error
	}{
		{"headless NodePort", []string{"service.headless=true", "service.type=NodePort"}, "service.headless needs service.type ClusterIP"},
		// values.schema.json refuses what no template would read, and wrong kinds of values.
		{"misspelt key", []string{"session.timout=60"}, "additional properties 'timout' not allowed"},
		{"unknown top-level key", []string{"replicas=3"}, "additional properties 'replicas' not allowed"},
		{"unknown service type", []string{"service.type=ExternalName"}, "at '/service/type': value must be one of"},
		{"pull policy", []string{"image.pullPolicy=Sometimes"}, "at '/image/pullPolicy': value must be one of"},
		{"fractional timeout", []string{"session.timeout=1.5"}, "session.timeout 1.5: want a positive whole number of seconds"},
		{"zero timeout", []string{"session.timeout=0"}, "session.timeout 0"},
		{"timeout as a duration", []string{"session.timeout=1h"}, "session.timeout 1h"},
		{"no engine", []string{"docker.socketPath="}, "docker.socketPath and docker.host are both empty"},
		{"relative socket", []string{"docker.socketPath=docker.sock"}, `docker.socketPath "docker.sock": want an absolute path`},
		{"token with a space", []string{"token.value=two words"}, "token.value: want printable ASCII without spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
			if err == nil {
				t.Fatalf("helm template rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}
