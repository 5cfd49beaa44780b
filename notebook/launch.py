"""Starts jupyter_server for enclave-mcp inside a notebook sandbox.

enclave-mcp writes this file to /tmp (the root file system is read-only) and runs it as a
background job of the sandbox's agent. Arguments are passed on to jupyter_server; the token
comes from JUPYTER_TOKEN. The server listens on the container's loopback only, and the
enclave-mcp server reaches it through the agent.
"""
import os
import sys


def set_nodelay_on_kernel_websockets():
    """Sends kernel messages at once.

    jupyter_server leaves Nagle's algorithm on for the kernel websocket: every reply then
    waits for the client's delayed ACK, about 40 ms per execute round trip. The handler's
    class moved between jupyter_server 1.x and 2.x; both are patched when present.
    """
    for module_name, class_name in (
        ("jupyter_server.services.kernels.handlers", "ZMQChannelsHandler"),
        ("jupyter_server.services.kernels.websocket", "KernelWebsocketHandler"),
    ):
        try:
            module = __import__(module_name, fromlist=[class_name])
            handler = getattr(module, class_name)
        except (ImportError, AttributeError):
            continue
        original = handler.open

        def open_with_nodelay(self, *args, _original=original, **kwargs):
            try:
                self.set_nodelay(True)
            except Exception:  # an old tornado, or a closed stream: latency only
                pass
            return _original(self, *args, **kwargs)

        handler.open = open_with_nodelay


def main():
    log = os.environ.get("ENCLAVE_JUPYTER_LOG")
    if log:
        # The agent discards a background job's output; the log explains a failed start.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    set_nodelay_on_kernel_websockets()
    from jupyter_server.serverapp import launch_new_instance

    sys.argv = ["jupyter-server"] + sys.argv[1:]
    launch_new_instance()


if __name__ == "__main__":
    main()
