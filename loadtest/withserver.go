package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// RunWithServer starts a server subprocess, runs the load against it (opts.URL and
// opts.Token are taken from the server), and checks what the run leaves: the server's peak
// memory, its sandbox containers once every session has closed, and after it has stopped.
func RunWithServer(ctx context.Context, sopts ServerOptions, opts Options) (Report, error) {
	srv, err := StartServer(ctx, sopts)
	if err != nil {
		return Report{}, err
	}
	defer srv.Kill() // a no-op once it has stopped; on early returns it must not outlive us
	opts.URL, opts.Token = srv.URL, srv.Token
	// The load comes to a server that has been up long enough to fill its pools, as a
	// server's sessions usually do; a server that cannot is measured as it is.
	ready, readyErr := waitPools(ctx, srv, poolsWait)
	rep, runErr := Run(ctx, opts)
	sr, err := drain(ctx, srv)
	sr.PoolsReady = ready
	rep.Server = sr
	if readyErr != nil {
		rep.ErrorSamples = append(rep.ErrorSamples, readyErr.Error())
	}
	return rep, errors.Join(runErr, err)
}

// poolsWait bounds the wait for a started server's warm pools to fill: a reserve of 48 takes
// ~25-45 s on 2 cores.
const poolsWait = 3 * time.Minute

// waitPools waits up to wait for srv's warm pools to hold every spare they want, warmed up,
// and returns how long that took from the server's start.
func waitPools(ctx context.Context, srv *Server, wait time.Duration) (time.Duration, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		pools, err := warmPools(wctx, srv.URL, srv.Token)
		if err == nil && pools.full() {
			return time.Since(srv.Started), nil
		}
		select {
		case <-wctx.Done():
			return time.Since(srv.Started), fmt.Errorf("the server's warm pools were not full within %v (%v): the load ran anyway", wait, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// drain measures and stops a server whose sessions have all closed.
func drain(ctx context.Context, srv *Server) (*ServerReport, error) {
	sr := &ServerReport{PID: srv.PID()}
	// Sessions end with a DELETE, which removes their sandboxes; allow the engine a moment.
	// What remains must be exactly the warm pool's spares (and spares being made).
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for {
		pools, spareErr := warmPools(wctx, srv.URL, srv.Token)
		spares := pools.spares()
		list, err := Sandboxes(wctx, srv.PID())
		sr.WarmSpares, sr.LeftAfterClose, sr.Pools = spares, len(list)-spares, pools.growth()
		if (err == nil && spareErr == nil && sr.LeftAfterClose <= 0) || wctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	sr.LeftAfterClose = max(sr.LeftAfterClose, 0)
	rss, rssErr := srv.PeakRSS()
	sr.PeakRSS = rss

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	begin := time.Now()
	stopErr := srv.Stop(sctx)
	sr.StopTime = time.Since(begin)
	// An exiting server hands its sandboxes' removal to the engine (which removes a
	// container once its agent has exited), so they may outlive it by the engine's removal
	// time; what is still there after that bounded wait is a leak.
	left, listErr := WaitSandboxes(sctx, srv.PID(), 0)
	sr.EngineDone = time.Since(begin)
	sr.LeftAfterStop = left
	if stopErr != nil {
		stopErr = fmt.Errorf("stopping the server: %w", stopErr)
	}
	return sr, errors.Join(rssErr, stopErr, listErr)
}

// poolStats are the server's warm pools as GET /stats shows them.
type poolStats []sandbox.WarmStats

// spares counts the pools' sandboxes, ready or being created, the reserves' included.
func (ps poolStats) spares() int {
	n := 0
	for _, p := range ps {
		n += p.Spare + p.Reserve + p.Filling
	}
	return n
}

// full reports whether every pool holds the spares it wants, its reserve included, none
// of them still being made or warmed up.
func (ps poolStats) full() bool {
	for _, p := range ps {
		if p.Spare < p.Size || p.Reserve < p.ReserveMax || p.Filling > 0 || p.Warming > 0 {
			return false
		}
	}
	return true
}

// growth describes each pool that served something: its bounds, how far it grew, and how
// its hand-outs went.
func (ps poolStats) growth() string {
	var out []string
	for _, p := range ps {
		if p.Hits+p.Misses == 0 {
			continue
		}
		bounds := fmt.Sprintf("%d..%d spares, grew to %d", p.Min, p.Max, p.Peak)
		if p.Max == 0 { // a server whose pools have a fixed size
			bounds = fmt.Sprintf("%d spares, fixed", p.Size)
		}
		if p.ReserveMax > 0 {
			bounds += fmt.Sprintf(", reserve %d", p.ReserveMax)
		}
		out = append(out, fmt.Sprintf("%s: %s; %d hits (%d from the reserve), %d misses (%d served by a refill)",
			p.Type, bounds, p.Hits, p.ReserveHits, p.Misses, p.Waited))
	}
	return strings.Join(out, "; ")
}

// warmPools asks the server (GET /stats) for its warm pools.
func warmPools(ctx context.Context, url, token string) (poolStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/stats", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the server's stats: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Warm poolStats `json:"warm_pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading the server's stats: %w", err)
	}
	return st.Warm, nil
}
