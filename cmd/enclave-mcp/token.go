package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// Where the HTTP token may come from, most explicit first. --token stays for the scripts
// that use it, with a warning: a command line is visible to every user of the machine (ps,
// /proc/PID/cmdline), while a file or the environment is not.
const (
	tokenEnv       = "ENCLAVE_MCP_TOKEN"
	legacyTokenEnv = "ENCLAVE_TOKEN" // read as before, after ENCLAVE_MCP_TOKEN
	maxTokenBytes  = 4096
)

// tokenSource is where a token came from, for messages (never the token itself).
type tokenSource string

// resolveToken finds the configured token: --token, --token-file, ENCLAVE_MCP_TOKEN, then
// ENCLAVE_TOKEN. It returns "" when none is set. A token is one line of printable text
// without spaces: it travels in an HTTP header.
func resolveToken(flagToken, tokenFile string, getenv func(string) string, log *slog.Logger) (string, tokenSource, error) {
	if flagToken != "" && tokenFile != "" {
		return "", "", errors.New("--token and --token-file are both set: give one (prefer --token-file, which ps does not show)")
	}
	token, source := flagToken, tokenSource("--token")
	switch {
	case flagToken != "":
		log.Warn("--token is visible to every user of this machine in the process list (ps); " +
			"pass it with --token-file PATH (a file only you can read) or the " + tokenEnv + " environment variable instead")
	case tokenFile != "":
		t, err := readTokenFile(tokenFile, log)
		if err != nil {
			return "", "", err
		}
		token, source = t, "--token-file"
	case getenv(tokenEnv) != "":
		token, source = getenv(tokenEnv), tokenEnv
	case getenv(legacyTokenEnv) != "":
		token, source = getenv(legacyTokenEnv), legacyTokenEnv
	default:
		return "", "", nil
	}
	if err := checkToken(token); err != nil {
		return "", "", fmt.Errorf("the token from %s %w", source, err)
	}
	return token, source, nil
}

// readTokenFile reads a token file: its first line, surrounding space trimmed. A file others
// can read is used, with a warning.
func readTokenFile(path string, log *slog.Logger) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading --token-file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("the --token-file can be read by other users: chmod 600 it", "path", path, "mode", st.Mode().Perm().String())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading --token-file %s: %w", path, err)
	}
	if len(data) > maxTokenBytes {
		return "", fmt.Errorf("--token-file %s: larger than %d bytes; want one line holding the token", path, maxTokenBytes)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("--token-file %s: empty; want one line holding the token", path)
	}
	return token, nil
}

// checkToken refuses a token that cannot be sent in a header as given.
func checkToken(token string) error {
	if len(token) > maxTokenBytes {
		return fmt.Errorf("is longer than %d bytes", maxTokenBytes)
	}
	for _, c := range token {
		if c > unicode.MaxASCII || !unicode.IsPrint(c) || c == ' ' {
			return errors.New("holds a space, a control character or a non-ASCII character; want printable ASCII, e.g. $(openssl rand -hex 24)")
		}
	}
	return nil
}

// httpToken returns the token the HTTP endpoints require. Without one, a loopback listener
// gets a random token (shown once, see showGeneratedToken) and any other address is refused:
// a remote endpoint is never open.
func httpToken(addr, token string) (string, bool, error) {
	if token != "" {
		return token, false, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("--http %q: want HOST:PORT, e.g. 127.0.0.1:8000: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", false, fmt.Errorf("--http %s listens beyond this machine: set --token-file PATH (or %s), or bind 127.0.0.1", addr, tokenEnv)
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]), true, nil
}

// showGeneratedToken shows a generated token to the operator once, and never to the log.
// On a terminal it is printed there (stderr). Otherwise stderr is most likely a log
// collector (journald, docker logs, CI), where anyone who can read logs would get the
// token: it goes to a new file only this user can read (0600, random name, in
// $XDG_RUNTIME_DIR or the temp directory), and the log names the file. It returns the file's
// path ("" on a terminal); the caller removes it when the server stops.
func showGeneratedToken(token string, stderr io.Writer, terminal bool, dir string, log *slog.Logger) (string, error) {
	if terminal {
		_, err := fmt.Fprintf(stderr, "\nenclave-mcp: no token given, generated one for this run (shown once, not logged):\n\n    %s\n\n"+
			"Clients send it as \"Authorization: Bearer <token>\". For a stable token use --token-file PATH or %s.\n\n", token, tokenEnv)
		return "", err
	}
	if dir == "" {
		dir = os.Getenv("XDG_RUNTIME_DIR")
	}
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "enclave-mcp-token-*") // created 0600
	if err != nil {
		return "", fmt.Errorf("writing the generated token to a file (stderr is not a terminal, so it is not printed): %w", err)
	}
	path := f.Name()
	_, werr := fmt.Fprintln(f, token)
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("writing the generated token to %s: %w", path, err)
	}
	abs, _ := filepath.Abs(path)
	log.Info("no token given: generated one for this run and wrote it to a file only this user can read; "+
		"it is removed when the server stops (use --token-file PATH or "+tokenEnv+" for a stable token)", "token_file", abs)
	return abs, nil
}
