// Package client is the one HTTP client of a did:plc directory's public
// API: export pages (seq mode and legacy), the live /export/stream, audit
// logs, documents, /_health, and the transparency log's checkpoint, tiles
// and entry bundles; and, with File, the files of a static folder served
// under a base URL (a bundle folder). The mirror and plc audit read a
// directory through it;
// Post, under the same contract, sends a request to another server (the
// transparency log's witnesses).
//
// Its contract:
//
//   - Every answer is bounded: in size (each route's bound below, or the
//     one WithMaxBody sets; the transparency log's exact bounds always),
//     and in time (the http.Client's timeout; the stream's handshake by
//     the caller's context).
//   - An answer other than the one a route documents is a *StatusError: a
//     status is a value (its Status field), never a text to match; a body
//     over its bound, cut off or not in the route's format is one too,
//     classed by its Err (ErrTooLong, ErrCutOff, ErrMalformed,
//     ErrNotRegistered). Its Body is the evidence: what the directory
//     sent, for a redirect its whole answer.
//   - It follows no redirect off the directory's origin, and none at all
//     for export pages: what it returns, and what a caller publishes as
//     evidence, is only ever what the directory itself sent.
//   - A URL's password is redacted in every error and in String.
//
// It does no verification beyond the shape of an answer: the did:plc
// rules, the transparency log's proofs and the comparison of directories
// are its callers'.
package client
