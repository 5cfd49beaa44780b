package main

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// REST creates from the warm pool: ms-enclave's client's flow for a sandbox without a
// config (POST /sandbox/create {}, then GET /sandbox/{id}) through client.Remote against
// the REST API on a loopback listener, with a spare ready, beside a plain Docker create+start
// in the same run. The target is a median at most a tenth of the baseline's. Each
// run waits, untimed, for the pool to have a spare, and deletes its sandbox after the
// stopwatch stopped.

const benchRESTToken = "enclave-bench-rest-token"

func (b *bench) restCreate(ctx context.Context) (err error) {
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {Image: b.cfg.Image}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b.engine, sandbox.TypeDocker)},
		Warm:     map[sandbox.Type]int{sandbox.TypeDocker: 1},
		WarmMax:  map[sandbox.Type]int{sandbox.TypeDocker: 4},
	})
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if cerr := m.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the REST sandboxes: %w", cerr))
		}
	}()
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Config{Core: core, Token: benchRESTToken})
	if err != nil {
		return err
	}
	ts := httptest.NewServer(api.Handler())
	defer ts.Close()
	remote, err := client.NewRemote(client.RemoteConfig{BaseURL: ts.URL, Token: benchRESTToken})
	if err != nil {
		return err
	}

	row := row{Op: "REST create from the warm pool (ms-enclave client's flow: POST /sandbox/create {} + GET /sandbox/{id})",
		Baseline: "ContainerCreate+ContainerStart, PID 1 `sleep` (target: ours ≤ 1/10 of it)"}
	row.Ours, err = measure(ctx, "ours: REST create, spare ready", b.n, func(w *stopwatch) error {
		if err := waitSpare(ctx, m); err != nil {
			return err
		}
		w.restart()
		id, err := remote.Create(ctx, sandbox.TypeDocker, sandbox.Config{})
		if err != nil {
			return err
		}
		if _, err := remote.Get(ctx, id); err != nil {
			return err
		}
		w.stop()
		return remote.Delete(context.WithoutCancel(ctx), id)
	})
	if err != nil {
		return err
	}
	if row.Docker, err = b.dockerCreateStart(ctx, b.createRuns()); err != nil {
		return err
	}
	row.Target = row.Docker.Median / 10
	b.rep.add(row)
	if w := warmStats(m); w.Misses > 0 {
		fmt.Fprintf(os.Stderr, "  note: %d REST creates found no spare ready: %+v\n", w.Misses, w)
	}
	return nil
}
