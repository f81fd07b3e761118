package credentials

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/icebox-rtc/icebox/httpapi"
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

// Refusal is the HTTP answer to a failed Authenticate: 401 saying which of the failures above
// it was (never the parser's details), or the API error err already is.
func Refusal(err error) *httpapi.Error {
	if !errors.Is(err, ErrMissingToken) && !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrTokenExpired) {
		return httpapi.ErrorOf(err)
	}
	msg := ErrInvalidToken.Error()
	for _, known := range []error{ErrMissingToken, ErrTokenExpired, ErrNoSubject} {
		if errors.Is(err, known) {
			msg = known.Error()
		}
	}
	return &httpapi.Error{Status: http.StatusUnauthorized, Code: httpapi.CodeUnauthorized, Message: msg}
}
