package runtimeapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"unicode"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/httpjson"
)

// upload stores a multipart upload: the part named "file", under the "filename" field when
// one is sent, else under the part's own file name. The file is read whole (at most
// MaxUploadBytes) before anything is written.
func (a *API) upload(w http.ResponseWriter, r *http.Request) {
	// The form's boundaries and the filename field cost a little more than the file.
	limit := a.cfg.MaxUploadBytes + 64<<10
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		a.failErr(w, fmt.Errorf("%w: the upload is %d bytes, larger than the %d-byte limit", api.ErrTooLarge, r.ContentLength, a.cfg.MaxUploadBytes))
		return
	}
	ct, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "multipart/form-data" || params["boundary"] == "" {
		a.failErr(w, fmt.Errorf("%w: an upload is multipart/form-data with the file in the field \"file\"", api.ErrBadRequest))
		return
	}
	mr := multipart.NewReader(http.MaxBytesReader(w, r.Body, limit), params["boundary"])
	var (
		data              []byte
		gotFile           bool
		filename, partFor string
	)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			a.failErr(w, uploadError(err, a.cfg.MaxUploadBytes))
			return
		}
		switch part.FormName() {
		case "file":
			if gotFile {
				a.failErr(w, fmt.Errorf("%w: the upload holds more than one \"file\" part", api.ErrBadRequest))
				return
			}
			data, err = io.ReadAll(io.LimitReader(part, a.cfg.MaxUploadBytes+1))
			if err == nil && int64(len(data)) > a.cfg.MaxUploadBytes {
				err = &http.MaxBytesError{Limit: a.cfg.MaxUploadBytes}
			}
			gotFile, partFor = true, part.FileName()
		case "filename":
			var b []byte
			b, err = io.ReadAll(io.LimitReader(part, 4097))
			filename = string(b)
		default:
			_, err = io.Copy(io.Discard, part)
		}
		if err != nil {
			a.failErr(w, uploadError(err, a.cfg.MaxUploadBytes))
			return
		}
	}
	if !gotFile {
		a.failErr(w, fmt.Errorf("%w: the upload has no \"file\" part", api.ErrBadRequest))
		return
	}
	if filename == "" {
		filename = partFor
	}
	f, err := a.cfg.Sessions.Upload(r.Context(), a.owner(r), r.PathValue("session_id"), filename, data)
	a.answer(w, f, err)
}

// uploadError says why an upload could not be read.
func uploadError(err error, limit int64) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return fmt.Errorf("%w: the uploaded file is larger than the %d-byte limit", api.ErrTooLarge, limit)
	}
	return fmt.Errorf("%w: reading the multipart upload: %w", api.ErrBadRequest, err)
}

// errorBody is every error answer: FastAPI's {"detail": "..."} plus the REST API's code.
type errorBody struct {
	Detail string   `json:"detail"`
	Code   api.Code `json:"code"`
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	httpjson.Write(w, status, v, func(err error) any {
		return errorBody{Detail: "encoding the answer: " + err.Error(), Code: api.CodeInternal}
	})
}

// failErr answers err with the status its kind calls for: a full session is 507
// Insufficient Storage, a command outside the allow-list 403, a bad name 400.
func (a *API) failErr(w http.ResponseWriter, err error) {
	code := api.CodeOf(err)
	a.fail(w, code.Status(), code, err.Error())
}

// fail answers with a JSON error whose detail starts with a capital letter.
func (a *API) fail(w http.ResponseWriter, status int, code api.Code, detail string) {
	if first, size := utf8.DecodeRuneInString(detail); first != utf8.RuneError {
		detail = string(unicode.ToUpper(first)) + detail[size:]
	}
	if status >= 500 && status != http.StatusInsufficientStorage {
		a.log.Error("session API request failed", "status", status, "code", code, "detail", detail)
	}
	writeJSON(w, status, errorBody{Detail: detail, Code: code})
}
