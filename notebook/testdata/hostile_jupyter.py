"""A hostile Jupyter server for enclave-mcp's integration tests (issue 9, finding 3).

It runs inside a real sandbox in place of jupyter_server and speaks just enough of its REST
API and of the kernel channels websocket for the notebook client to start a kernel and run
cells. A cell's code picks what the "kernel" answers:

  ok        prints "ok"
  flood N   N MiB of output, as 1 MiB stream messages, until interrupted
  huge N    one stream message of N MiB, sent in 1 MiB websocket frames

Standard library only: the test image has nothing else. Usage: python3 hostile_jupyter.py PORT
"""

import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import uuid

MIB = 1 << 20
MODEL = json.dumps({"id": "k1", "name": "python3", "execution_state": "idle"}).encode()
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

interrupts = 0


def respond(conn, status, body=b""):
    head = "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
    conn.sendall(head.encode() + body)


def frame(payload, opcode=1, fin=True):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", first, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, 126, n)
    else:
        head = struct.pack(">BBQ", first, 127, n)
    return head + payload


def read_frame(f):
    b = f.read(2)
    if len(b) < 2:
        return None, None
    opcode, n = b[0] & 0x0F, b[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    mask = f.read(4) if b[1] & 0x80 else b"\0\0\0\0"
    data = bytearray(f.read(n))
    for i in range(len(data)):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def envelope(channel, msg_type, parent):
    """The start of a message, up to the opening brace of its content."""
    head = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type}
    return '{"header": %s, "parent_header": {"msg_id": "%s"}, "channel": "%s", "content": {' % (
        json.dumps(head), parent, channel)


def message(channel, msg_type, parent, content):
    return frame((envelope(channel, msg_type, parent) + json.dumps(content)[1:] + "}").encode())


def flood(conn, parent, mib):
    """mib MiB of stdout in 1 MiB messages; stops early when interrupted."""
    start = interrupts
    text = ("y" * 1023 + "\\n") * 1024
    one = frame((envelope("iopub", "stream", parent) + '"name": "stdout", "text": "' + text + '"}}').encode())
    for _ in range(mib):
        if interrupts != start:
            return {"status": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
        conn.sendall(one)
    return {"status": "ok", "execution_count": 1}


def huge(conn, parent, mib):
    """One message of mib MiB, in 1 MiB frames."""
    conn.sendall(frame((envelope("iopub", "stream", parent) + '"name": "stdout", "text": "').encode(), 1, False))
    chunk = frame(b"x" * MIB, 0, False)
    for _ in range(mib):
        conn.sendall(chunk)
    conn.sendall(frame(b'"}}', 0, True))
    return {"status": "ok", "execution_count": 1}


def channels(conn, f):
    while True:
        opcode, data = read_frame(f)
        if opcode is None or opcode == 8:
            return
        if opcode != 1:
            continue
        req = json.loads(data)
        parent, kind = req["header"]["msg_id"], req["header"]["msg_type"]
        conn.sendall(message("iopub", "status", parent, {"execution_state": "busy"}))
        if kind == "kernel_info_request":
            conn.sendall(message("shell", "kernel_info_reply", parent, {"status": "ok"}))
        elif kind == "execute_request":
            code = req["content"]["code"].split()
            if code[0] == "flood":
                reply = flood(conn, parent, int(code[1]))
            elif code[0] == "huge":
                reply = huge(conn, parent, int(code[1]))
            else:
                conn.sendall(message("iopub", "stream", parent, {"name": "stdout", "text": "ok\n"}))
                reply = {"status": "ok", "execution_count": 1}
            conn.sendall(message("shell", "execute_reply", parent, reply))
        conn.sendall(message("iopub", "status", parent, {"execution_state": "idle"}))


def handle(conn):
    global interrupts
    f = conn.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        method, path = line.decode().split(" ")[:2]
        path = path.split("?")[0]
        headers = {}
        while True:
            h = f.readline().decode()
            if h.strip() == "":
                break
            k, v = h.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        f.read(int(headers.get("content-length", "0")))
        if path == "/api/kernels/k1/channels":
            key = headers["sec-websocket-key"] + WS_GUID
            accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
            channels(conn, f)
            return
        if path == "/api/kernels/k1/interrupt":
            interrupts += 1
            respond(conn, 204)
        elif method == "POST" and path == "/api/kernels":
            respond(conn, 201, MODEL)
        elif path == "/api/kernels":
            respond(conn, 200, b"[]")
        elif path.startswith("/api/kernels/k1"):
            respond(conn, 200, MODEL)
        else:
            respond(conn, 404, b"{}")


def serve(conn):
    try:
        handle(conn)
    except OSError:
        pass  # the client hung up, as it should when a message passes its limit
    finally:
        conn.close()


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
