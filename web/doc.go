// Package web is the directory's web UI: HTML pages for people, served
// from the binary beside the API (api.Config.UI mounts it at GET /, /ui
// and /ui/…).
//
//   - GET /: the directory's status (latest seq, ops in the last hour and
//     day, the latest signed checkpoint; on a mirror the upstream, lag and
//     divergence count).
//   - GET /ui/{did}: a DID's current document and its audit history, as a
//     graph drawn in SVG on the server (nullified forks on branches, the
//     72-hour recovery window, tombstones) and as a table.
//   - GET /ui/search?q=: redirects a DID to its page. A handle is looked
//     up in the store's handle index (oplog.HandleIndex), and only the
//     DIDs whose current document (not nullified, not tombstoned) lists
//     at://<handle> count: one is redirected to, several are listed, none
//     is a 404 page. Without an index, handles are not looked up.
//   - GET /ui/divergences: a mirror's divergence records.
//
// The contract:
//   - No API route answers HTML: the UI has paths of its own, and GET
//     /:did stays the JSON document whatever the Accept header says.
//   - Every response carries CSP (no script, no inline style, same-origin
//     stylesheet and form only), nosniff and no-referrer. Pages are
//     rendered with html/template, SVG included, and carry no JavaScript;
//     values from ops are escaped, only http(s) endpoints become links,
//     and invisible or direction-changing characters are shown as
//     ⟨U+XXXX⟩.
//   - Bad input and unknown DIDs get HTML 400 and 404 pages; failures of
//     the store a 500 or 503 page whose details go to the log only.
//   - Every read is bounded: one DID's ops, one page of records, at most
//     oplog.MaxHandleDIDs heads per handle search, and counts answered by
//     an index (oplog.Stats), at most once per statusTTL.
package web
