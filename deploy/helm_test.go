package deploy_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v4"
)

// The chart, its values file exercising every option, and the release and namespace the
// tests render it as.
const (
	chartDir      = "helm/enclave-mcp"
	fullValues    = chartDir + "/ci/full-values.yaml"
	release       = "enclave"
	namespace     = "sandboxes"
	defaultPrefix = release + "-enclave-mcp" // the default fullname
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary is the pinned helm: $HELM when set (make chart-check sets it), else the one
// scripts/ensure-helm.sh keeps, which it builds from helm's Go module when missing (a few
// minutes, once). Under -short it is only used when already built, and the test skips
// otherwise.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		cmd := exec.Command("../scripts/ensure-helm.sh")
		cmd.Stderr = os.Stderr
		if testing.Short() {
			cmd.Env = append(os.Environ(), "HELM_NO_BUILD=1")
		}
		out, err := cmd.Output()
		if err != nil {
			helmErr = err
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		var exit *exec.ExitError
		if testing.Short() && errors.As(helmErr, &exit) && exit.ExitCode() == 3 {
			t.Skip("helm is not built yet and -short does not build it: run make chart-check")
		}
		t.Fatalf("getting helm (scripts/ensure-helm.sh): %v", helmErr)
	}
	return helmPath
}

// helm runs the helm binary and returns its stdout, or its error with stderr.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(stderr.String() + "\n" + stdout.String()))
	}
	return stdout.String(), nil
}

// manifest is one rendered document, with the fields the tests read.
type manifest struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Data  map[string]string `json:"data"`
	Spec  json.RawMessage   `json:"spec"`
	Rules []rbacRule        `json:"rules"` // a Role's
	Text  string            `json:"-"`     // the document as rendered
}

type deploymentSpec struct {
	Replicas int `json:"replicas"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec podSpec `json:"spec"`
	} `json:"template"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool               `json:"automountServiceAccountToken"`
	ServiceAccountName            string              `json:"serviceAccountName"`
	EnableServiceLinks            *bool               `json:"enableServiceLinks"`
	TerminationGracePeriodSeconds int                 `json:"terminationGracePeriodSeconds"`
	SecurityContext               map[string]any      `json:"securityContext"`
	ImagePullSecrets              []map[string]string `json:"imagePullSecrets"`
	Containers                    []container         `json:"containers"`
	Volumes                       []volume            `json:"volumes"`
	NodeSelector                  map[string]string   `json:"nodeSelector"`
	Tolerations                   []map[string]any    `json:"tolerations"`
	Affinity                      map[string]any      `json:"affinity"`
}

type container struct {
	Name            string   `json:"name"`
	Image           string   `json:"image"`
	ImagePullPolicy string   `json:"imagePullPolicy"`
	Args            []string `json:"args"`
	Env             []envVar `json:"env"`
	Ports           []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	ReadinessProbe  *probe                       `json:"readinessProbe"`
	LivenessProbe   *probe                       `json:"livenessProbe"`
	Resources       map[string]map[string]string `json:"resources"`
	SecurityContext map[string]any               `json:"securityContext"`
	VolumeMounts    []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly"`
	} `json:"volumeMounts"`
}

type envVar struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		} `json:"secretKeyRef"`
	} `json:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
}

type volume struct {
	Name     string `json:"name"`
	HostPath *struct {
		Path string `json:"path"`
		Type string `json:"type"`
	} `json:"hostPath"`
	ConfigMap *struct {
		Name string `json:"name"`
	} `json:"configMap"`
	EmptyDir map[string]any `json:"emptyDir"`
	Secret   map[string]any `json:"secret"`
}

type serviceSpec struct {
	Type            string `json:"type"`
	ClusterIP       string `json:"clusterIP"`
	SessionAffinity string `json:"sessionAffinity"`
	Ports           []struct {
		Name       string `json:"name"`
		Port       int    `json:"port"`
		TargetPort any    `json:"targetPort"`
		NodePort   int    `json:"nodePort"`
	} `json:"ports"`
}

// rendered is what `helm template` made, by kind (the chart makes at most one of each).
type rendered map[string]manifest

// render runs `helm template` on the chart with args (values files, --set) and parses every
// document; it fails the test when helm fails.
func render(t *testing.T, args ...string) rendered {
	t.Helper()
	out, err := helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatalf("helm template %s: %v", strings.Join(args, " "), err)
	}
	return parse(t, out)
}

// parse splits helm's output into its documents.
func parse(t *testing.T, out string) rendered {
	t.Helper()
	docs := rendered{}
	for _, text := range strings.Split(out, "\n---\n") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, text)
		}
		if doc == nil {
			continue // a comment-only document
		}
		// A stray word printed by a template lands on a key of its own, which Kubernetes
		// would refuse and helm lint does not see.
		for k := range doc {
			if !slices.Contains([]string{"apiVersion", "kind", "metadata", "spec", "data", "type", "rules", "roleRef", "subjects", "automountServiceAccountToken"}, k) {
				t.Errorf("rendered %v has a top-level key %q: a template printed stray text\n%s", doc["kind"], k, text)
			}
		}
		if v, _ := doc["apiVersion"].(string); v == "" {
			t.Errorf("rendered %v has no apiVersion", doc["kind"])
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("rendered document is not JSON-able: %v\n%s", err, text)
		}
		var m manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("reading a rendered %v: %v", doc["kind"], err)
		}
		m.Text = text
		if _, dup := docs[m.Kind]; dup {
			t.Fatalf("the chart rendered two %s documents", m.Kind)
		}
		if m.Metadata.Namespace != namespace {
			t.Errorf("%s %s: namespace %q, want the release's %q", m.Kind, m.Metadata.Name, m.Metadata.Namespace, namespace)
		}
		docs[m.Kind] = m
	}
	return docs
}

// kinds are the kinds rendered, sorted.
func (r rendered) kinds() []string {
	var out []string
	for k := range r {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// deployment is the rendered Deployment's spec and its one container.
func (r rendered) deployment(t *testing.T) (deploymentSpec, container) {
	t.Helper()
	m, ok := r["Deployment"]
	if !ok {
		t.Fatalf("no Deployment rendered (got %v)", r.kinds())
	}
	var d deploymentSpec
	if err := json.Unmarshal(m.Spec, &d); err != nil {
		t.Fatalf("reading the Deployment: %v", err)
	}
	if len(d.Template.Spec.Containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", len(d.Template.Spec.Containers))
	}
	return d, d.Template.Spec.Containers[0]
}

// service is the rendered Service's spec.
func (r rendered) service(t *testing.T) serviceSpec {
	t.Helper()
	m, ok := r["Service"]
	if !ok {
		t.Fatalf("no Service rendered (got %v)", r.kinds())
	}
	var s serviceSpec
	if err := json.Unmarshal(m.Spec, &s); err != nil {
		t.Fatalf("reading the Service: %v", err)
	}
	return s
}

// config is the server's --config file from the ConfigMap, decoded.
func (r rendered) config(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	text, ok := r["ConfigMap"].Data["config.json"]
	if !ok {
		t.Fatalf("no ConfigMap with config.json rendered (got %v)", r.kinds())
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("config.json is not a JSON object: %v\n%s", err, text)
	}
	return cfg
}

// env returns the container's variable name, and whether it is set.
func (c container) env(name string) (envVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return envVar{}, false
}

// mount is the container's mount path of volume name, "" when not mounted.
func (c container) mount(name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}

// volume is the pod's volume name.
func (p podSpec) volume(t *testing.T, name string) volume {
	t.Helper()
	for _, v := range p.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("the pod has no volume %q", name)
	return volume{}
}

// checkTokenFromSecret checks that the token reaches the server as ENCLAVE_MCP_TOKEN from
// Secret name's key, and never on its command line nor in the Deployment's text.
func checkTokenFromSecret(t *testing.T, r rendered, c container, name, key, token string) {
	t.Helper()
	e, ok := c.env("ENCLAVE_MCP_TOKEN")
	switch {
	case !ok:
		t.Fatal("no ENCLAVE_MCP_TOKEN in the container's environment")
	case e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
		t.Fatalf("ENCLAVE_MCP_TOKEN is not taken from a Secret: %+v", e)
	case e.ValueFrom.SecretKeyRef.Name != name || e.ValueFrom.SecretKeyRef.Key != key:
		t.Errorf("ENCLAVE_MCP_TOKEN from secret %s key %s, want %s key %s", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, name, key)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--token") {
			t.Errorf("the server's args hold %q: the token goes by the environment", a)
		}
		if token != "" && strings.Contains(a, token) {
			t.Errorf("the token is in the server's args: %q", c.Args)
		}
	}
	if token != "" && strings.Contains(r["Deployment"].Text, token) {
		t.Error("the token is in the Deployment's text")
	}
}

// secretToken decodes the token from the chart's Secret.
func secretToken(t *testing.T, r rendered) string {
	t.Helper()
	s, ok := r["Secret"]
	if !ok {
		t.Fatalf("no Secret rendered (got %v)", r.kinds())
	}
	b, err := base64.StdEncoding.DecodeString(s.Data["token"])
	if err != nil {
		t.Fatalf("the Secret's token is not base64: %v", err)
	}
	return string(b)
}

// decodeStrict decodes raw into v, refusing unknown fields, as the server reads its config.
func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data")
	}
	return nil
}

// jsonNumber makes numbers comparable whatever their Go type (YAML gives int, JSON float64).
func jsonNumber(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}
