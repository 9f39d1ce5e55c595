package api

import (
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/plcdir/plc/validate"
)

// Errors net/http answers itself, before any handler runs, on the raw
// connection: 400 for a malformed request (a bad request line, header name
// or value, a missing or malformed Host), 431 for headers over
// MaxHeaderBytes, 501 for a transfer coding other than chunked, 505 for an
// HTTP version other than 1.x. It writes each as one plain-text response
// in a single write, with a fixed shape:
//
//	HTTP/1.1 <code> <reason>\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n<text>
//
// TransportErrorsAsJSON wraps a listener so that a write of exactly that
// shape is sent instead as the API's JSON error, {"message": <text without
// the code>}, with the CORS header every response carries. Nothing else a
// connection writes is touched: a handler's response always has a Date
// header and a length or chunked framing, so it never has that shape.
//
// net/http's 417 for an Expect header other than 100-continue, which it
// sends with an empty body, gets a JSON message too. What stays outside:
// connections closed without an answer (a read timeout, a TLS handshake to
// the plain-text port).
func TransportErrorsAsJSON(ln net.Listener) net.Listener {
	return &jsonErrListener{ln}
}

type jsonErrListener struct{ net.Listener }

func (ln *jsonErrListener) Accept() (net.Conn, error) {
	c, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrConn{Conn: c}, nil
}

type jsonErrConn struct{ net.Conn }

// NetConn returns the connection c wraps.
func (c *jsonErrConn) NetConn() net.Conn { return c.Conn }

// SetLinger and CloseWrite pass through to a TCP connection.
func (c *jsonErrConn) SetLinger(sec int) error { return setLinger(c.Conn, sec) }
func (c *jsonErrConn) CloseWrite() error       { return closeWrite(c.Conn) }

// Write sends net/http's own error responses as JSON, anything else as is.
func (c *jsonErrConn) Write(p []byte) (int, error) {
	if b, ok := transportErrorJSON(p); ok {
		if _, err := c.Conn.Write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

const transportErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// transportErrorCodes are the statuses net/http answers before a handler.
var transportErrorCodes = map[string]bool{"400": true, "431": true, "501": true, "505": true}

// transportErrorJSON returns the JSON form of one of net/http's own error
// responses, or false if p is not one.
func transportErrorJSON(p []byte) ([]byte, bool) {
	if bytes.HasPrefix(p, []byte(expectationFailed)) && bytes.HasSuffix(p, []byte("\r\nContent-Length: 0\r\n\r\n")) &&
		bytes.Count(p, []byte("\r\n\r\n")) == 1 {
		return jsonError("417 Expectation Failed", "Expectation Failed: only 100-continue is supported"), true
	}
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 4 || !transportErrorCodes[string(rest[:3])] || rest[3] != ' ' {
		return nil, false
	}
	code := string(rest[:3])
	status, text, ok := bytes.Cut(rest, []byte(transportErrorHeaders))
	if !ok || bytes.ContainsAny(status, "\r\n") || bytes.ContainsAny(text, "\r\n") {
		return nil, false
	}
	msg := bytes.TrimPrefix(text, []byte(code+" "))
	return jsonError(string(status), string(bytes.ToValidUTF8(msg, []byte("\uFFFD")))), true
}

// expectationFailed starts net/http's answer to an Expect header other
// than 100-continue, which it sends with an empty body (and our handlers
// never send a 417).
const expectationFailed = "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\n"

// jsonError is a whole response closing the connection: status ("400 Bad
// Request: …", its reason phrase as net/http wrote it) and {"message": msg}.
func jsonError(status, msg string) []byte {
	body := append([]byte(`{"message":`), validate.AppendJSONString(nil, msg)...)
	body = append(body, '}')
	out := make([]byte, 0, len(status)+len(body)+160)
	out = append(out, "HTTP/1.1 "...)
	out = append(out, status...)
	out = append(out, "\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\nDate: "...)
	out = time.Now().UTC().AppendFormat(out, "Mon, 02 Jan 2006 15:04:05 GMT")
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

// badUpgrade checks the parts of a WebSocket handshake (RFC 6455) that the
// WebSocket library would otherwise refuse with a plain-text answer: an
// upgrade over HTTP/1.0, a version other than 13, a missing, repeated or
// malformed Sec-WebSocket-Key. It returns the status and message of the
// API's JSON answer, or 0 for a request that is not an upgrade attempt
// (the stream answers those 426 itself) or that is a valid one.
func badUpgrade(r *http.Request) (int, string) {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return 0, ""
	}
	if !r.ProtoAtLeast(1, 1) {
		return http.StatusUpgradeRequired, "WebSocket upgrade needs HTTP/1.1"
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return 0, ""
	}
	if v := r.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || v[0] != "13" {
		return http.StatusBadRequest, "unsupported WebSocket version: only 13 is"
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake needs exactly one Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated header lists token
// (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
