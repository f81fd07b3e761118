// Package credentials mints and verifies time-limited TURN credentials in the TURN REST form
// (draft-uberti-behave-turn-rest-00, as coturn's use-auth-secret), serves them over HTTP as
// /ice-config and /turn-credentials, and decides who may ask for them (auth.mode).
//
// The TURN server verifies with the same code that mints, so the two can never disagree.
package credentials
