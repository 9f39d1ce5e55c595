// Package api is the directory's HTTP API: the routes of plc.directory
// (documented in openapi.yaml, served at /openapi.yaml) over an oplog.Log,
// with the reference's status codes, messages, content types and bytes.
//
// Every error is a JSON body {"message": "..."}; nothing a client sends
// can cause a 500. Request bodies are capped, and every response carries
// Access-Control-Allow-Origin: *. The web UI (Config.UI, package web),
// when set, answers its own paths only — GET /, /ui and /ui/… — with HTML;
// no API route ever does.
package api
