// Package httpjson holds what the HTTP faces (the REST API and the session API) share
// below their wire formats: writing a JSON answer and recording the status a handler wrote.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write writes v as JSON with status and headers that keep answers out of caches and
// content sniffing. When v cannot be encoded, the answer is a 500 whose body is
// onEncodeError(err), the face's own error shape.
func Write(w http.ResponseWriter, status int, v any, onEncodeError func(error) any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(onEncodeError(err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// StatusWriter records the status a handler wrote (200 when it wrote a body first). Unwrap
// lets http.ResponseController reach the connection's Flush for streamed answers.
type StatusWriter struct {
	http.ResponseWriter
	Code int
}

func (s *StatusWriter) WriteHeader(code int) {
	if s.Code == 0 {
		s.Code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusWriter) Write(b []byte) (int, error) {
	if s.Code == 0 {
		s.Code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// MethodNotAllowed runs h, a ServeMux's handler for a request no pattern matched, into a
// recorder, and reports whether it answered 405 and with which Allow header. The faces then
// answer in JSON rather than with the mux's plain text.
func MethodNotAllowed(h http.Handler, r *http.Request) (allow string, ok bool) {
	rec := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	return rec.header.Get("Allow"), rec.code == http.StatusMethodNotAllowed
}

// headerRecorder keeps the status and headers a handler sets, and drops its body.
type headerRecorder struct {
	header http.Header
	code   int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.code = code }
