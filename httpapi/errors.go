package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Error is an API error: an HTTP status and the contract's error body
// {"error": {"code": ..., "message": ...}}.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when set, is sent as the Retry-After header (rate limits, draining).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Error codes of the JSON error body.
const (
	CodeBadRequest   = "bad-request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not-found"
	CodeMethod       = "method-not-allowed"
	CodeRateLimited  = "rate-limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// ErrorOf is the API error a client sees for err: an *Error in its chain as it is, anything
// else a 500 that says nothing about its cause.
func ErrorOf(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error"}
}

// WriteError writes err as the contract's JSON error body, with its status: the one place an
// error becomes an HTTP response.
func WriteError(w http.ResponseWriter, err error) {
	e := ErrorOf(err)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	WriteJSON(w, e.Status, map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

// WriteJSON writes v as a JSON body that no cache keeps.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
