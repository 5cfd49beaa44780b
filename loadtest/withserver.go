package loadtest

import (
	"context"
	"errors"
	"fmt"
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
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	left, _ := WaitSandboxes(wctx, srv.PID(), 0) // on timeout the count left goes in the report
	cancel()
	sr.LeftAfterClose = left
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
