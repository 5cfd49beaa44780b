package notebook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Kernel is a running Jupyter kernel and the client's connection to it. It runs one cell at
// a time (a second caller waits its turn), recovers from a restart or a dead kernel on the
// next cell, and says when that lost the kernel's state.
type Kernel struct {
	client *Client
	name   string
	log    *slog.Logger
	turn   chan struct{} // holds a token while a cell runs or the kernel restarts
	// interrupts tells the running cell that Interrupt was called, so that it repeats the
	// interrupt until it stops.
	interrupts chan struct{}

	mu   sync.Mutex
	id   string
	ch   *channels
	lost string // why the state was lost since the last cell; the next cell reports it
}

// Timings of the kernel protocol.
const (
	// kernelInfoRetry is how long one kernel_info_request is given before it is sent again:
	// a kernel that is still starting drops requests instead of queueing them.
	kernelInfoRetry = 500 * time.Millisecond
	// interruptGrace is how long a cell has to stop after SIGINT before the kernel is
	// restarted instead.
	interruptGrace = 2 * time.Second
	// interruptRepeat is how often the interrupt is sent again while the cell runs on.
	interruptRepeat = 250 * time.Millisecond
	// idleGrace bounds the wait for the execute_reply after the iopub idle status, counted
	// from the last byte received: the reply is due at once, unless an interrupt kept the
	// cell from running (ipykernel then goes idle without replying).
	idleGrace = time.Second
	// replyGrace bounds the wait for the idle status after the execute_reply, counted the
	// same way. Outputs trail the reply on the other channel, and a large one can keep the
	// connection silent for seconds: jupyter_server decodes and re-encodes a 20 MB stream
	// message before its first byte is sent, slower still on a loaded machine.
	replyGrace = 5 * time.Second
	// controlTimeout bounds the REST calls made on the caller's behalf when its own context
	// is already done (interrupting a timed-out or cancelled cell).
	controlTimeout = 10 * time.Second
)

// StartKernel creates a kernel from the named kernel spec ("" for the server's default) and
// returns once it answers kernel_info.
func StartKernel(ctx context.Context, client *Client, name string, log *slog.Logger) (*Kernel, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	model, err := client.CreateKernel(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("creating kernel: %w", err)
	}
	if model.Name != "" {
		name = model.Name
	}
	k := &Kernel{client: client, name: name, log: log.With("kernel", model.ID), turn: make(chan struct{}, 1), interrupts: make(chan struct{}, 1), id: model.ID}
	if err := k.connect(ctx); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
		defer cancel()
		_ = client.DeleteKernel(dctx, model.ID)
		return nil, err
	}
	return k, nil
}

// ID is the kernel's id on the server.
func (k *Kernel) ID() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.id
}

// Name is the kernel's kernel spec, e.g. python3.
func (k *Kernel) Name() string { return k.name }

// connect replaces the channels connection and waits until the kernel answers on it, on
// both the shell and the iopub channel.
func (k *Kernel) connect(ctx context.Context) error {
	k.mu.Lock()
	old, id := k.ch, k.id
	k.ch = nil
	k.mu.Unlock()
	if old != nil {
		old.close()
	}
	for {
		ch, err := k.client.connect(ctx, id, k.log)
		if err != nil {
			return err
		}
		err = waitKernelInfo(ctx, ch)
		if err == nil {
			k.mu.Lock()
			k.ch = ch
			k.mu.Unlock()
			return nil
		}
		ch.close()
		if !errors.Is(err, errNoIOPub) {
			return err
		}
		// A connection made while the kernel restarts can get replies but never its output:
		// make another.
		k.log.Debug("the kernel answers but its output does not arrive; reconnecting")
	}
}

// errNoIOPub: the kernel answers requests, but its iopub messages do not reach this
// connection.
var errNoIOPub = errors.New("no iopub messages on this connection")

// iopubAttempts is how many kernel_info replies without iopub traffic make a connection
// count as deaf.
const iopubAttempts = 3

// waitKernelInfo asks for kernel_info until the kernel answers, and until its status for
// that request arrives on iopub too: output is published there, and a subscription that
// is not working yet would lose a cell's output.
func waitKernelInfo(ctx context.Context, ch *channels) error {
	deaf := 0
	for {
		id, box, err := ch.send(channelShell, "kernel_info_request", struct{}{})
		if err != nil {
			return fmt.Errorf("waiting for the kernel to answer: %w", err)
		}
		replied, published, err := awaitKernelInfo(ctx, ch, id, box)
		switch {
		case err != nil:
			return err
		case replied && published:
			return nil
		case replied:
			if deaf++; deaf >= iopubAttempts {
				return errNoIOPub
			}
		}
	}
}

// awaitKernelInfo waits up to kernelInfoRetry for request id's reply and its iopub status.
func awaitKernelInfo(ctx context.Context, ch *channels, id string, box *mailbox) (replied, published bool, err error) {
	timer := time.NewTimer(kernelInfoRetry)
	defer timer.Stop()
	defer ch.forget(id)
	for {
		select {
		case <-box.ready:
			for _, m := range box.take() {
				switch {
				case m.Header.MsgType == "kernel_info_reply":
					replied = true
				case m.Channel == channelIOPub:
					published = true
				}
			}
			if replied && published {
				return true, true, nil
			}
		case <-timer.C:
			return replied, published, nil
		case <-ch.done:
			return false, false, fmt.Errorf("waiting for the kernel to answer: %w", ch.closed())
		case <-ctx.Done():
			return false, false, fmt.Errorf("waiting for the kernel to answer: %w", ctx.Err())
		}
	}
}

// ExecOptions tune one cell's run.
type ExecOptions struct {
	// Timeout bounds the cell; when it passes the kernel is interrupted (state kept) and the
	// result has TimedOut set. Zero means no limit.
	Timeout time.Duration
	// MaxOutputBytes caps Output and Stderr each by encoded size; zero means
	// DefaultMaxOutputBytes.
	MaxOutputBytes int
	// OnOutput, when set, receives the cell's stdout and stderr while it runs, at most every
	// ProgressInterval (zero means 500 ms), capped in total (see progress).
	OnOutput         func(sandbox.Output)
	ProgressInterval time.Duration
}

// Execute runs code as the next cell. Earlier cells' variables and imports are there unless
// Result.StateLost says otherwise. A timeout or a cancelled ctx interrupts the kernel, which
// keeps its state; a cell that ignores the interrupt gets the kernel restarted. An error
// means the cell could not be run or followed (the server is unreachable, the connection
// broke); everything the cell did itself, exceptions included, is in the Result.
func (k *Kernel) Execute(ctx context.Context, code string, opts ExecOptions) (Result, error) {
	start := time.Now()
	select {
	case k.turn <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("waiting for the previous cell to finish: %w", ctx.Err())
	}
	defer func() { <-k.turn }()
	select {
	case <-k.interrupts: // meant for a cell that has finished
	default:
	}

	lost, err := k.ensureReady(ctx)
	if err != nil {
		return Result{}, err
	}
	k.mu.Lock()
	ch := k.ch
	k.mu.Unlock()

	limit := opts.MaxOutputBytes
	if limit <= 0 {
		limit = DefaultMaxOutputBytes
	}
	ch.textLimit.Store(int64(limit))
	col := newCollector(limit)
	prog := newProgress(opts.OnOutput)
	if prog != nil {
		col.onStream = prog.add
	}
	msgID, box, err := ch.send(channelShell, "execute_request", executeRequest{Code: code, StoreHistory: true, UserExpressions: map[string]any{}})
	if err != nil {
		return Result{}, fmt.Errorf("sending the cell: %w", err)
	}
	defer ch.forget(msgID)

	res, err := k.follow(ctx, ch, box, col, prog, opts)
	if err != nil {
		return res, err
	}
	res.StateLost = lost
	res.Duration = time.Since(start)
	return res, nil
}

// follow collects the cell's messages until the kernel has replied and gone idle, or the
// cell is stopped.
func (k *Kernel) follow(ctx context.Context, ch *channels, box *mailbox, col *collector, prog *progress, opts ExecOptions) (Result, error) {
	var (
		reply     *executeReply
		idle      bool
		timedOut  bool
		cancelled bool
		deadline  <-chan time.Time
		stopping  <-chan time.Time // the interrupt's grace period
		again     <-chan time.Time // the next repeat of the interrupt
		repeatEnd time.Time        // when an outside interrupt stops being repeated
		settle    <-chan time.Time // the reply or the idle status came; the other is due
		restarted bool
		tick      <-chan time.Time
		notes     []string
	)
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	if prog != nil {
		interval := opts.ProgressInterval
		if interval <= 0 {
			interval = 500 * time.Millisecond
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	// The interrupt is repeated until the cell stops: ipykernel ignores SIGINT outside a
	// cell's code, so one that lands before the cell has started is lost.
	var repeat *time.Ticker
	repeatInterrupts := func() {
		if repeat == nil {
			repeat = time.NewTicker(interruptRepeat)
			again = repeat.C
		}
	}
	stop := func() {
		if stopping == nil {
			k.interruptQuietly(ctx)
			stopping = time.After(interruptGrace)
			repeatInterrupts()
		}
	}
	defer func() {
		if repeat != nil {
			repeat.Stop()
		}
	}()
	done := ctx.Done()
loop:
	for reply == nil || !idle {
		select {
		case <-box.ready:
			for _, m := range box.take() {
				r, isIdle := col.handle(m)
				if r != nil {
					reply = r
				}
				idle = idle || isIdle
			}
			if (reply != nil || idle) && settle == nil {
				settle = time.After(settleGrace(idle))
			}
		case <-settle:
			if grace, quiet := settleGrace(idle), ch.quietFor(); quiet < grace {
				settle = time.After(grace - quiet) // output is still arriving
				continue
			}
			// One of the two never came. A missing idle status costs nothing: the reply
			// has the outcome. A missing reply happens when an interrupt lands just as
			// the cell starts: ipykernel then goes idle without replying or running it.
			break loop
		case <-tick:
			prog.flush()
		case <-deadline:
			timedOut = true
			stop()
		case <-done:
			done, cancelled = nil, true
			stop()
		case <-k.interrupts:
			// Interrupt sent the first; repeat it for a while, but an interrupt from outside
			// never restarts the kernel: the cell's own timeout does that if it must.
			repeatEnd = time.Now().Add(interruptGrace)
			repeatInterrupts()
		case <-again:
			if reply == nil && (stopping != nil || time.Now().Before(repeatEnd)) {
				k.interruptQuietly(ctx)
			}
		case <-stopping:
			// The cell ignored SIGINT (a C loop, a blocked call). A restart stops it; the
			// next cell would otherwise queue behind it.
			notes = append(notes, "the cell did not stop when interrupted, so the kernel was restarted: variables and imports from earlier cells are lost")
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
			err := k.restart(rctx)
			cancel()
			if err != nil {
				notes = append(notes, "restarting the kernel failed: "+err.Error())
				k.setLost("the kernel could not be restarted after a cell ignored an interrupt")
			}
			restarted = true
			break loop
		case <-ch.stale:
			k.setLost("the kernel died while running the previous cell (out of memory, or a crash) and was restarted")
			res := col.result()
			res.KernelDied = true
			res.Notes = append(res.Notes, notes...)
			return res, nil
		case <-ch.done:
			err := ch.closed()
			if errors.Is(err, ErrMessageTooLarge) {
				// The cell is still running, sending more of the same: stop it, so that it
				// does not hold up the next cell.
				k.interruptQuietly(ctx)
			}
			res := col.result()
			res.Notes = append(res.Notes, notes...)
			return res, fmt.Errorf("running the cell: %w", err)
		}
	}
	if prog != nil {
		prog.flush()
	}
	res := col.result()
	res.Notes = append(res.Notes, notes...)
	res.TimedOut, res.Cancelled = timedOut, cancelled && !timedOut
	switch {
	case reply != nil:
		res.Status, res.ExecutionCount = reply.Status, reply.ExecutionCount
	case !restarted && !res.TimedOut && !res.Cancelled:
		res.Status = "aborted"
		res.Notes = append(res.Notes, "the kernel went idle without running the cell (an interrupt arrived as it started)")
	}
	// The KeyboardInterrupt our own interrupt raised is not the cell's error.
	if (res.TimedOut || res.Cancelled) && res.Error != nil && res.Error.Name == "KeyboardInterrupt" {
		res.Error = nil
	}
	return res, nil
}

// settleGrace is how long a quiet connection is given for the other of the reply and the
// idle status, once one of them came (idle says which).
func settleGrace(idle bool) time.Duration {
	if idle {
		return idleGrace
	}
	return replyGrace
}

// interruptQuietly interrupts the kernel on behalf of a caller whose context may be done.
func (k *Kernel) interruptQuietly(ctx context.Context) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
	defer cancel()
	if err := k.client.InterruptKernel(ictx, k.ID()); err != nil {
		k.log.Warn("interrupting the kernel", "error", err)
		return
	}
	k.log.Debug("interrupted the kernel")
}

func (k *Kernel) setLost(why string) {
	k.mu.Lock()
	k.lost = why
	k.mu.Unlock()
}

// ensureReady makes sure there is a live kernel with a working connection before a cell,
// recovering from a dead kernel, a restart or a broken connection. It returns why the
// kernel's state was lost since the previous cell, if it was.
func (k *Kernel) ensureReady(ctx context.Context) (string, error) {
	k.mu.Lock()
	ch, lost := k.ch, k.lost
	k.lost = ""
	k.mu.Unlock()
	// A loss not reported yet stays for the cell that gets to run.
	fail := func(err error) (string, error) {
		if lost != "" {
			k.setLost(lost)
		}
		return "", err
	}
	if ch != nil && ch.closed() == nil {
		if stale, _ := ch.isStale(); !stale {
			return lost, nil
		}
	}
	var diedUnseen bool
	if ch != nil {
		diedUnseen, _ = ch.isStale()
	}
	model, err := k.client.GetKernel(ctx, k.ID())
	switch {
	case errors.Is(err, ErrKernelNotFound):
		created, cerr := k.client.CreateKernel(ctx, k.name)
		if cerr != nil {
			return fail(fmt.Errorf("replacing a kernel the server lost: %w", cerr))
		}
		k.mu.Lock()
		k.id = created.ID
		k.mu.Unlock()
		lost = "the kernel was gone from the server, so a new one was started"
	case err != nil:
		return fail(fmt.Errorf("checking the kernel: %w", err))
	case model.ExecutionState == "dead":
		if _, err := k.client.RestartKernel(ctx, k.ID()); err != nil {
			return fail(fmt.Errorf("restarting a dead kernel: %w", err))
		}
		lost = "the kernel had died (out of memory, or a crash) and was restarted"
	case diedUnseen && lost == "":
		lost = "the kernel died since the previous cell (out of memory, or a crash) and was restarted"
	}
	if err := k.connect(ctx); err != nil {
		return fail(err)
	}
	return lost, nil
}

// Interrupt stops the running cell, if any, with KeyboardInterrupt; the kernel keeps its
// state. A cell run by Execute gets the interrupt repeated for a while, since ipykernel
// ignores one that lands before the cell's code has started.
func (k *Kernel) Interrupt(ctx context.Context) error {
	if err := k.client.InterruptKernel(ctx, k.ID()); err != nil {
		return fmt.Errorf("interrupting the kernel: %w", err)
	}
	select {
	case k.interrupts <- struct{}{}:
	default: // one is pending already
	}
	return nil
}

// Restart replaces the kernel's process with a fresh one: every variable and import is
// gone. A running cell is interrupted first, so the restart does not wait behind it.
func (k *Kernel) Restart(ctx context.Context) error {
	k.interruptQuietly(ctx)
	select {
	case k.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the running cell to stop: %w", ctx.Err())
	}
	defer func() { <-k.turn }()
	if err := k.restart(ctx); err != nil {
		return err
	}
	k.setLost("") // asked for: nothing to report to the next cell
	return nil
}

// restart restarts (or, if the server lost it, recreates) the kernel and reconnects. The
// caller holds the turn.
func (k *Kernel) restart(ctx context.Context) error {
	_, err := k.client.RestartKernel(ctx, k.ID())
	if errors.Is(err, ErrKernelNotFound) {
		created, cerr := k.client.CreateKernel(ctx, k.name)
		if cerr != nil {
			return fmt.Errorf("replacing a kernel the server lost: %w", cerr)
		}
		k.mu.Lock()
		k.id = created.ID
		k.mu.Unlock()
		err = nil
	}
	if err != nil {
		return fmt.Errorf("restarting the kernel: %w", err)
	}
	// After a restart the old connection gets replies but no iopub messages.
	return k.connect(ctx)
}

// Close ends the connection to the kernel; the kernel itself goes with its server.
func (k *Kernel) Close() {
	k.mu.Lock()
	ch := k.ch
	k.ch = nil
	k.mu.Unlock()
	if ch != nil {
		ch.close()
	}
}
