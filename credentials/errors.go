package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ErrBadUsername is a username that is not in the TURN REST form EXPIRY[:USER].
var ErrBadUsername = errors.New("not a TURN REST username")

// Authentication failures (401).
var (
	// ErrMissingToken is a request without a token where auth.mode needs one.
	ErrMissingToken = errors.New("missing credentials: send Authorization: Bearer <token>, or ?token=")
	// ErrInvalidToken is a token that is not accepted.
	ErrInvalidToken = errors.New("invalid token")
	// ErrTokenExpired is a JWT past its exp.
	ErrTokenExpired = errors.New("token expired")
	// ErrNoSubject is a JWT without sub: it names no user, so no credential or session can be
	// tied to one.
	ErrNoSubject = fmt.Errorf("%w: the JWT has no sub claim naming the user", ErrInvalidToken)
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
)

// ErrorFor maps an error to the API error a client sees: authentication failures become 401,
// an *Error stays as it is, anything else is a 500 that says nothing about its cause.
func ErrorFor(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, ErrMissingToken), errors.Is(err, ErrInvalidToken), errors.Is(err, ErrTokenExpired):
		msg := ErrInvalidToken.Error()
		for _, known := range []error{ErrMissingToken, ErrTokenExpired, ErrNoSubject} {
			if errors.Is(err, known) {
				msg = known.Error()
			}
		}
		return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: msg}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// WriteError writes err as the contract's JSON error body, with its status: the one place an
// error becomes an HTTP response.
func WriteError(w http.ResponseWriter, err error) {
	e := ErrorFor(err)
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
