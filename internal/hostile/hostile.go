// Package hostile serves directories that attack a mirror (or plc audit)
// through its upstream client, one attack per Mode, for the tests and the
// attack suite. None of them serves a valid op: their export lines are
// well-formed seq-mode envelopes around operations that are not ops, so a
// mirror detects seq mode, rejects every line, and goes on to what the
// mode attacks. What a mirror must do against each is in the Mode's doc.
package hostile

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/plcdir/plc/internal/defaults"
)

// Mode is one attack.
type Mode string

const (
	// Redirect answers every request with a 302 to Config.Target (an
	// address only the mirror can reach). The mirror must never fetch it
	// nor publish it: the redirect answer itself is its evidence.
	Redirect Mode = "redirect"
	// Junk serves an export without end: every page full, every line
	// different, none an op. The stored evidence must stay within its
	// cap, and the mirror must back off between pages.
	Junk Mode = "junk"
	// RepeatedSeq serves pages (of more than one line) whose last line has
	// its seq key twice, the second MaxInt64 (what encoding/json reads). The page must be a bad
	// response, and /_health's lag must stay sane.
	RepeatedSeq Mode = "repeated-seq"
	// SilentStream serves one line, then accepts /export/stream's upgrade
	// and sends nothing, never answering a ping. The mirror must end the
	// stream and show that it is not keeping up.
	SilentStream Mode = "silent-stream"
	// StalledHandshake serves one line, then never answers
	// /export/stream's upgrade. The mirror must give up the handshake.
	StalledHandshake Mode = "stalled-handshake"
)

// Modes are all the modes.
var Modes = []Mode{Redirect, Junk, RepeatedSeq, SilentStream, StalledHandshake}

// Config configures a hostile directory.
type Config struct {
	Mode Mode
	// Target is where Redirect points.
	Target string
	// LineBytes is the size of a junk line (default 1024).
	LineBytes int
	// Release, when closed, ends the connections SilentStream and
	// StalledHandshake hold (nil: they are held until the client goes).
	// The server's Close does not end them: they are hijacked.
	Release <-chan struct{}
}

// Handler serves the directory of cfg.Mode.
func Handler(cfg Config) http.Handler {
	defaults.Positive(&cfg.LineBytes, 1024)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.Mode == Redirect {
			w.Header().Set("Location", cfg.Target)
			w.WriteHeader(http.StatusFound)
			return
		}
		switch r.URL.Path {
		case "/export":
			serveExport(w, r, cfg)
		case "/export/stream":
			serveStream(w, r, cfg)
		default:
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"Not Found"}`))
		}
	})
}

// JunkLine is the export line of seq that Junk serves: a seq-mode
// envelope around an operation that is not one, padded to about size
// bytes, different for every seq.
func JunkLine(seq int64, size int) []byte {
	const head = `{"type":"sequenced_op","seq":%d,"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","operation":{"junk":"%s"},"cid":"bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","createdAt":"2025-01-01T00:00:00.000Z"}`
	tag := strconv.FormatInt(seq, 10)
	pad := max(0, size-len(head)-len(tag)*2)
	return fmt.Appendf(nil, head, seq, strings.Repeat("x", pad)+tag)
}

func serveExport(w http.ResponseWriter, r *http.Request, cfg Config) {
	q := r.URL.Query()
	after, err1 := strconv.ParseInt(q.Get("after"), 10, 64)
	count, err2 := strconv.Atoi(q.Get("count"))
	if err1 != nil || err2 != nil || after < 0 || count < 1 || count > 1000 {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"message":"want after=<seq>&count=<1..1000>"}`))
		return
	}
	n := count
	if cfg.Mode == SilentStream || cfg.Mode == StalledHandshake {
		n = int(max(0, min(int64(count), 1-after))) // one line, seq 1
	}
	w.Header().Set("Content-Type", "application/jsonlines")
	for i := range n {
		seq := after + int64(i) + 1
		line := JunkLine(seq, cfg.LineBytes)
		if cfg.Mode == RepeatedSeq && i == n-1 && n > 1 {
			line = append(line[:len(line)-1], `,"seq":9223372036854775807}`...)
		}
		w.Write(append(line, '\n'))
	}
}

func serveStream(w http.ResponseWriter, r *http.Request, cfg Config) {
	switch cfg.Mode {
	case SilentStream:
		// The upgrade, by hand: then nothing, not even a pong.
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Key") == "" {
			http.Error(w, "want a WebSocket upgrade", http.StatusBadRequest)
			return
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(r.Header.Get("Sec-WebSocket-Key")))
		buf.Flush()
		hold(conn, cfg.Release)
	case StalledHandshake:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		hold(conn, cfg.Release)
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"message":"Not Found"}`))
	}
}

// hold keeps conn open, reading and ignoring what the client sends, until
// the client goes or release is closed.
func hold(conn net.Conn, release <-chan struct{}) {
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, conn)
		close(gone)
	}()
	select {
	case <-gone:
	case <-release:
	}
}

// acceptKey is the Sec-WebSocket-Accept of key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
