package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
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
	rep, runErr := Run(ctx, opts)
	sr, err := drain(ctx, srv)
	rep.Server = sr
	return rep, errors.Join(runErr, err)
}

// drain measures and stops a server whose sessions have all closed.
func drain(ctx context.Context, srv *Server) (*ServerReport, error) {
	sr := &ServerReport{PID: srv.PID()}
	// Sessions end with a DELETE, which removes their sandboxes; allow the engine a moment.
	// What remains must be exactly the warm pool's spares (and spares being made).
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for {
		spares, spareErr := warmSpares(wctx, srv.URL, srv.Token)
		list, err := Sandboxes(wctx, srv.PID())
		sr.WarmSpares, sr.LeftAfterClose = spares, len(list)-spares
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
	list, listErr := Sandboxes(sctx, srv.PID())
	sr.LeftAfterStop = len(list)
	if stopErr != nil {
		stopErr = fmt.Errorf("stopping the server: %w", stopErr)
	}
	return sr, errors.Join(rssErr, stopErr, listErr)
}

// warmSpares asks the server (GET /stats) how many warm-pool sandboxes it holds, ready or
// being created.
func warmSpares(ctx context.Context, url, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/stats", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading the server's stats: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Warm []struct {
			Spare   int `json:"spare"`
			Filling int `json:"filling"`
		} `json:"warm_pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("reading the server's stats: %w", err)
	}
	n := 0
	for _, w := range st.Warm {
		n += w.Spare + w.Filling
	}
	return n, nil
}
