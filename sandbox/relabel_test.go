package sandbox_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// relabelling is the process backend with labels that can change (sandbox.Relabeler), as
// the Kubernetes backend's: it records every Relabel, and fails them when fail is set.
type relabelling struct {
	*sandbox.Process
	mu     sync.Mutex
	calls  map[string]map[string]string // by ref
	fail   bool
	refs   map[string]string // sandbox id -> ref, from the launches
	launch sync.Mutex
}

func (r *relabelling) Launch(ctx context.Context, spec sandbox.Spec, ready func(sandbox.Streams) error) (sandbox.Launched, error) {
	l, err := r.Process.Launch(ctx, spec, ready)
	if err == nil {
		r.launch.Lock()
		r.refs[spec.ID] = l.Ref
		r.launch.Unlock()
	}
	return l, err
}

func (r *relabelling) Relabel(_ context.Context, ref string, labels map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("test: relabel refused")
	}
	r.calls[ref] = maps.Clone(labels)
	return nil
}

// TestWarmHandOutRelabels: a warm spare, launched for nobody, takes its owner's label on
// its backend when handed out, where the backend can relabel; a refused relabel leaves the
// sandbox handed out all the same. A cold create is labelled at launch and not relabelled.
func TestWarmHandOutRelabels(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := map[bool]string{false: "relabelled", true: "relabel refused"}[fail]
		t.Run(name, func(t *testing.T) {
			b := &relabelling{Process: testenv.Process(t), calls: map[string]map[string]string{}, fail: fail, refs: map[string]string{}}
			m := sandbox.NewManager(sandbox.ManagerOptions{
				Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b, sandbox.TypeDocker)},
				Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
				Warm:     map[sandbox.Type]int{sandbox.TypeDocker: 1},
			})
			t.Cleanup(func() {
				if err := m.Close(context.Background()); err != nil {
					t.Error(err)
				}
			})
			testwait.Until(t, 30*time.Second, "the warm spare ready", func() bool {
				for _, w := range m.Stats().Warm {
					if w.Type == sandbox.TypeDocker && w.Spare == 1 {
						return true
					}
				}
				return false
			})
			sb, err := m.Create(t.Context(), "alice", sandbox.TypeDocker, sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := m.GetOwned("alice", sb.ID()); err != nil || got != sb {
				t.Fatalf("the handed-out sandbox is not alice's: %v", err)
			}
			b.launch.Lock()
			ref := b.refs[sb.ID()]
			b.launch.Unlock()
			b.mu.Lock()
			got := b.calls[ref]
			b.mu.Unlock()
			if want := map[string]string{sandbox.LabelOwner: "alice"}; !fail && !maps.Equal(got, want) {
				t.Errorf("relabel of %s: %v, want %v", ref, got, want)
			}
			cold, err := m.Create(t.Context(), "bob", sandbox.TypeDocker, sandbox.Config{Image: "other"})
			if err != nil {
				t.Fatal(err)
			}
			b.launch.Lock()
			coldRef := b.refs[cold.ID()]
			b.launch.Unlock()
			b.mu.Lock()
			defer b.mu.Unlock()
			if _, ok := b.calls[coldRef]; ok {
				t.Errorf("a cold create was relabelled")
			}
		})
	}
}
