# The sandbox's resident Python interpreter (agent/pyfork.go): it imports the heavy modules
# the image has once, then forks a fresh process for each python_executor call, which runs
# the call's script as `python3 -` would. The agent starts it as `python3 -` with this file
# on stdin and a SOCK_SEQPACKET socket as descriptor 3.
#
# Protocol. The agent sends one message per call: the byte "c" with five descriptors
# attached, [stdout, stderr, request, report, status]. The server forks an intermediate
# process, which forks the call's process and exits at once, so the call's process is
# reparented to the agent (PID 1, or a child subreaper) and the agent collects its exit
# status itself; the intermediate first writes the call's pid to `report`. The call's
# process then reads, from `request`, its header's length as a decimal line, the header (the
# call's directory, then what its environment changes from the server's: KEY=VALUE to set,
# KEY to unset, all NUL-separated) and the script; the agent writes them only once it has
# taken the pid, so no script runs before the agent knows its process, and the process
# acknowledges it with "r" on `status` (a spare killed or stopped since it was forked never
# does, and the agent then starts the call afresh). When the script is done, the process
# closes its stdout and stderr and writes its exit status to `status` ("N\n", or "N+\n":
# see light), then waits to be killed: the kernel's tear-down of a process that shares the
# interpreter's pages takes milliseconds, and the result need not wait for it (the agent
# kills what is left of the call's tree, and this process once it has answered).
#
# Speed. On a virtual machine a page fault can cost tens of microseconds, and a forked
# process's first write to each page it shares with the server is one (a copy). So each
# spare, while it waits, runs a call's steps once (rehearse) and copies ahead the pages a
# whole call writes to, exit handlers included, which a probe forked once at start-up
# finds (learn_copies).
#
# The server trusts nothing it is sent beyond that, keeps no state between calls, and is
# non-dumpable, so the calls (which run as the same uid) cannot read or write its memory.
# They can still kill or stop it; the agent then starts another, or runs the call itself.
import atexit
import builtins
import ctypes
import fcntl
import gc
import importlib.machinery
import io
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
import types

MADV_POPULATE_WRITE = 23  # Linux 5.14
PAGE = resource.getpagesize()
MAX_COPIED_PAGES = 4096
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
libc = ctypes.CDLL(None, use_errno=True)


# The modules data-analysis code imports first, which a full server imports once for all
# its calls.
PRELOADS = ("numpy", "pandas", "matplotlib")
# A light server (ENCLAVE_FORK_LIGHT in its environment, which it removes) imports none of
# them: it costs a few megabytes instead of tens, for a pool's reserve of spares. A call
# forked from it that imported one of them says so in its exit report, and the agent then
# starts a full server in its place for the calls after it.
light = os.environ.pop("ENCLAVE_FORK_LIGHT", None) is not None


def preload():
    # Each module the image lacks is skipped. matplotlib gets its non-interactive backend
    # (the sandbox has no display), which is what it falls back to there anyway.
    if light:
        return
    for name in PRELOADS:
        try:
            __import__(name)
        except Exception:
            pass
    if "matplotlib" in sys.modules:
        try:
            sys.modules["matplotlib"].use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:
            pass


def serve(sock):
    """Forks one call per message; returns, in the call's process only, its descriptors."""
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 8)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # the agent is gone
        if msg != b"c" or len(fds) != 5:
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            try:
                call = os.fork()
            except OSError:
                os._exit(1)
            if call == 0:
                return fds
            os.write(fds[3], b"%d\n" % call)
            os._exit(0)
        for fd in fds:
            os.close(fd)


def become_call(sock, fds):
    """Turns this forked process into the call, as the agent would have started `python3 -`.
    What does not depend on the call is done first, while the process waits as the spare
    for the next call; then it reads its request (its directory and environment, then the
    script) and returns the script."""
    global status_fd, call_pid
    stdout, stderr, request, report, status_fd = fds
    call_pid = os.getpid()
    os.close(report)
    sock.close()
    status_fd = out_of_the_way(status_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in [int(fd) for fd in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd != request and fd != status_fd:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor
    sys.argv[:] = ["-"]
    importlib.invalidate_caches()  # the workspace may hold modules written since the server started
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # else every call would draw the same numbers
    # A fresh __main__, with what `python3 -` gives it.
    main = types.ModuleType("__main__")
    main.__dict__.update(__annotations__={}, __builtins__=builtins, __cached__=None, __file__="<stdin>",
                         __loader__=importlib.machinery.BuiltinImporter)
    sys.modules["__main__"] = main
    for first, count in copied:
        libc.madvise(ctypes.c_void_p(first * PAGE), ctypes.c_size_t(count * PAGE), MADV_POPULATE_WRITE)
    rehearse()

    header, script = read_request(request)
    try:
        os.write(status_fd, b"r")  # the agent now knows this process took the call
    except OSError:
        pass
    take_request(header)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    return script


def read_request(fd):
    """Reads a request from descriptor fd, to its end, and closes fd: returns its header and
    its script."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    size, _, rest = b"".join(chunks).partition(b"\n")
    size = int(size)
    return rest[:size], rest[size:]


def take_request(header):
    """Moves to the call's directory and applies its environment's differences from the
    server's, as its request's header gives them."""
    fields = header.split(b"\0")
    os.chdir(fields[0])
    for entry in fields[1:]:
        key, eq, value = entry.partition(b"=")
        if eq:
            os.environb[key] = value
        else:
            os.environb.pop(key, None)


def rehearse():
    """Runs what every call runs (a request read from a pipe and decoded, a script compiled
    and run, a print) once, in a namespace that is then dropped, while the process waits as
    the spare. A forked process's first write to each page it shares with the server copies
    that page, which costs microseconds each, and tens of them on a virtual machine whose
    page faults go through the hypervisor; a small call makes about a hundred such writes.
    Done here, they are paid before the call arrives. Nothing of it remains for the call to
    see: no module, variable, descriptor or output."""
    here = os.getcwd().encode() + b"\0ENCLAVE_REHEARSAL=1\0ENCLAVE_REHEARSAL"
    script = b"x = 1\nprint(x, file=sink)\n"
    r, w = os.pipe()
    os.write(w, b"%d\n" % len(here) + here + script)  # a few hundred bytes: the pipe holds them
    os.close(w)
    here, script = read_request(r)
    take_request(here)  # where it is already, and a variable set and unset: nothing changes
    libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    exec(compile(script, "<rehearsal>", "exec"), {"__builtins__": builtins, "sink": io.StringIO()})


def learn_copies():
    """Finds the server's pages that a whole call writes to, so that each spare can copy
    them ahead (MADV_POPULATE_WRITE changes no byte; refused harmlessly before Linux 5.14):
    rehearse covers what a call runs before and in its script, but not Python's exit
    handlers, which cannot run early. A probe forked once from the server rehearses, then
    exits as a call does, its output to /dev/null, and reports which of the pages it
    shared with the server it then held a copy of. Returns them as (first page, count)."""
    global probe
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(3)  # the server's socket: the probe holds nothing of the agent's
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # else its /proc/self files are root's
            probe = (w, {page for page, own in private_pages().items() if not own})
            rehearse()
            finish()  # fast_exit reports to w and exits
        finally:
            os._exit(1)
    os.close(w)
    report = b""
    with os.fdopen(r, "rb", buffering=0) as f:
        deadline = time.monotonic() + 10
        while len(report) < 64 << 10 and select.select([f], [], [], max(0, deadline - time.monotonic()))[0]:
            chunk = f.read(64 << 10)
            if not chunk:
                break
            report += chunk
    os.kill(pid, signal.SIGKILL)  # done, or stuck in an exit handler
    os.waitpid(pid, 0)
    ranges = []
    for line in report.splitlines():
        first, count = (int(x) for x in line.split())
        ranges.append((first, count))
    return ranges


def report_copies(w, shared):
    """In the probe: writes the pages of shared this process now has copies of, as ranges."""
    now = private_pages()
    pages = sorted(page for page in shared if now.get(page))[:MAX_COPIED_PAGES]
    lines = []
    for page in pages:
        if lines and lines[-1][0] + lines[-1][1] == page:
            lines[-1][1] += 1
        else:
            lines.append([page, 1])
    os.write(w, b"".join(b"%d %d\n" % (first, count) for first, count in lines))


def private_pages():
    """This process's present pages in its writable private mappings: {page: own copy}, where
    an own copy is a page no other process maps (/proc/PID/pagemap bits 63 and 56)."""
    pages = {}
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        for line in maps:
            fields = line.split()
            if fields[1] != "rw-p":
                continue
            start, end = (int(x, 16) // PAGE for x in fields[0].split("-"))
            pagemap.seek(start * 8)
            entries = pagemap.read((end - start) * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries)):
                if entry >> 63:
                    pages[start + i] = bool(entry >> 56 & 1)
    return pages


def run(script):
    """Runs the script as __main__ and exits as `python3 -` would."""
    global status
    main = sys.modules["__main__"]
    try:
        exec(compile(script, "<stdin>", "exec"), main.__dict__)
    except SystemExit as e:
        status = exit_code(e)
    except BaseException as e:
        # The traceback starts at the script: this frame is the server's, not the user's.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        status = -signal.SIGINT if isinstance(e, KeyboardInterrupt) else 1
    finish()


def finish():
    """Does what Python's finalization does first: waits for the script's threads, then runs
    the exit handlers, the last of which is fast_exit; idle_handlers are left out when none
    of them has anything to do. Not left to the interpreter: its way out (a SystemExit, or
    this script's end) writes to a hundred pages more, each a copy (see rehearse). An
    exception there is reported as at a real exit, where no frame of this script is on the
    stack. A call with none of that to do goes straight to fast_exit: cold from the spare's
    wait, the steps that would come to nothing cost half a millisecond."""
    if nothing_to_finish():
        fast_exit()
    here = sys._getframe()

    def outside(tb):
        while tb is not None and tb.tb_frame is here:
            tb = tb.tb_next
        return tb

    hook = sys.unraisablehook
    sys.unraisablehook = lambda args: hook(type(args)((args.exc_type, args.exc_value, outside(args.exc_traceback),
                                                        args.err_msg, args.object)))
    try:
        threading._shutdown()
    except BaseException as e:
        print("Exception ignored in: %r" % threading, file=sys.stderr)
        sys.excepthook(type(e), e, outside(e.__traceback__))
    if idle():
        for handler in idle_handlers:
            atexit.unregister(handler)
    atexit._run_exitfuncs()
    fast_exit()  # in case the script unregistered it


status = 0  # the call's exit status, set by run
probe = None  # in learn_copies's probe: where it reports, and the pages it shares
status_fd = -1  # where the call reports its exit status (report_exit)
call_pid = -1  # the call's own process, the one whose exit is the call's
idle_handlers = []  # exit handlers finish may leave out, when idle() says so
idle = None  # whether none of idle_handlers has work (preloaded_exit_handlers)
callbacks_at_start = None  # the server's count of exit handlers (count_callbacks)


def nothing_to_finish():
    """Reports whether the call's exit has nothing to do before fast_exit: no thread to wait
    for, no exit handler registered (the count of registrations is the server's), and the
    preloaded modules' handlers idle."""
    return (callbacks_at_start is not None and atexit._ncallbacks() == callbacks_at_start
            and not threading._shutdown_locks and not threading._threading_atexits and idle())


def count_callbacks():
    """Returns atexit's count of exit handlers if a call's count can tell whether it
    registered any: the registry holds only fast_exit and idle_handlers, and unregistering
    does not lower the count (CPython 3.11 keeps a hole), so a call that registered one and
    unregistered another still changes it. Else None."""
    n = atexit._ncallbacks()
    if n != 1 + len(idle_handlers) or not hasattr(threading, "_shutdown_locks") or not hasattr(threading, "_threading_atexits"):
        return None

    def nothing():
        pass

    atexit.register(nothing)
    atexit.unregister(nothing)
    n += 1
    return n if atexit._ncallbacks() == n else None


def preloaded_exit_handlers():
    """Finds the exit handlers the preloaded modules registered that have work only if a call
    used those modules: matplotlib's when a figure is open, logging's when a handler was made
    since start, PIL's never (it frees a cache, which the exit does anyway). Run cold after
    the spare's wait, they cost about half a millisecond of every call's exit, for nothing
    in most. Returns them, and a test of whether none has anything to do, which runs at
    every call's exit: it holds what it looks at, since each lookup costs microseconds cold."""
    found = []
    figures = handlers = last = None
    count = 0
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is not None:
        figures = helpers.Gcf
        found.append(figures.destroy_all)
    imaging = sys.modules.get("PIL._imaging")
    if imaging is not None and hasattr(imaging, "clear_cache"):
        found.append(imaging.clear_cache)
    logging = sys.modules.get("logging")
    if logging is not None:
        # Weak references to every handler made, in order: a handler made since start is
        # appended; one dropped is taken out. At start: NullHandlers that libraries add,
        # and logging.lastResort, whose shutdown only flushes sys.stderr, which fast_exit
        # does.
        refs = logging._handlerList
        quiet = (type(None), logging.NullHandler, getattr(logging, "_StderrHandler", None))
        if all(type(ref()) in quiet for ref in refs):
            handlers = refs
            count, last = len(refs), refs[-1] if refs else None
            found.append(logging.shutdown)

    def idle():
        return ((figures is None or not figures.figs) and
                (handlers is None or (len(handlers) == count and (not count or handlers[-1] is last))))

    return found, idle


def fast_exit():
    """Registered first, so it runs last at exit: it flushes the call's output and exits
    with its status without tearing down the modules the server imported, which a fresh
    interpreter would not have had to."""
    if probe is not None:
        report_copies(*probe)
        os._exit(0)
    code = status
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BaseException:
            code = code or 120  # as Python does when the flush at exit fails
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    if os.getpid() != call_pid:
        os._exit(code & 0xFF)  # a child the script forked: only the call's own exit is its status
    if report_exit(code & 0xFF):
        # Exiting tears down the process's share of the interpreter's pages: a millisecond
        # or two of kernel time, on the CPU the agent may be about to answer on. So the
        # process waits for the agent to kill it once it has answered, or LINGER at most
        # (a script that replaced the descriptor makes the agent wait for the exit).
        select.select([], [], [], LINGER)
    os._exit(code & 0xFF)


LINGER = 0.05


def report_exit(code):
    """Tells the agent the call's exit status before the process exits: its output ends
    here (the agent reads to EOF on the pipes), and the exit itself is only the kernel's
    tear-down. From a light server, a "+" after the status says the call imported a module
    a full server preloads. A script that closed or replaced the descriptor only makes the
    agent wait for the exit, as for a started process. Returns whether the report was
    written."""
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    wants_preloads = light and any(name in sys.modules for name in PRELOADS)
    try:
        os.write(status_fd, b"%d%s\n" % (code, b"+" if wants_preloads else b""))
        return True
    except OSError:
        return False


def out_of_the_way(fd):
    """Moves descriptor fd up to the highest number the process may open (at most 1023),
    close-on-exec, so that the script's own descriptors are numbered as in a started
    `python3 -` and the programs it runs do not inherit it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(min(soft, 1024) - 1, 3))
    except OSError:
        os.set_inheritable(fd, False)
        return fd
    os.close(fd)
    return high


def exit_code(e):
    """The exit status of SystemExit e, printing its message as Python does."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    try:
        print(e.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


atexit.register(fast_exit)
libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
server = socket.socket(fileno=3)
preload()
idle_handlers, idle = preloaded_exit_handlers()
callbacks_at_start = count_callbacks()
gc.collect()
gc.freeze()  # the calls' collections then leave the preloaded objects' pages shared
try:
    # A light server's calls copy their pages as they go: the probe's scan of the page map
    # costs a second of CPU at start, and the copies ahead twenty milliseconds per call,
    # for no call faster here (a light server's pages are few).
    copied = [] if light else learn_copies()
except Exception:
    copied = []  # no /proc/self/pagemap: the calls copy their pages as they go
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # intermediates are reaped by the kernel
server.send(b"ready")
run(become_call(server, serve(server)))
