package credentials

import "errors"

// ErrBadUsername is a username that is not in the TURN REST form EXPIRY[:USER].
var ErrBadUsername = errors.New("not a TURN REST username")
