// Package api is the directory's HTTP API: the routes of plc.directory
// (documented in openapi.yaml, served at /openapi.yaml) over an oplog.Log,
// with the reference's status codes, messages, content types and bytes.
//
// Every error is a JSON body {"message": "..."}; nothing a client sends
// can cause a 500. Request bodies are capped, and every response carries
// Access-Control-Allow-Origin: *. The web UI (Config.UI, package web),
// when set, answers its own paths only — GET /, /ui and /ui/… — with HTML;
// no API route ever does.
//
// The read routes of a DID carry an ETag (the DID's latest op and the
// route) and answer 304 to a matching If-None-Match; every read route sets
// the Cache-Control a CDN may follow (read.go). With Config.ReadCacheBytes
// the rendered answers are kept in memory, exact under appends by any
// process sharing the database (readcache.go).
//
// Beyond the reference's routes: POST /dids resolves up to 1000 DIDs in
// one request, streamed as JSON lines through the same cache and one
// store query per batch (bulk.go); GET /_lookup/handle/:handle answers
// the DIDs whose current document claims a handle (lookup.go).
package api
