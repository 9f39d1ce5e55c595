package oplog

import (
	"bytes"
	"os"
	"sync"
)

// A ChangeProbe is a store's cheap way to tell that nothing was committed
// to it, by this process or any other, since an earlier probe: a token
// that differs after every commit. A reader that keeps answers current at
// a seq (the API's cache of rendered answers) probes before it reads the
// latest seq, keeps the token, and on a later request that finds the same
// token knows the log has not grown since, without a query. It is a
// capability: a store without it, or a probe that says "unknown" (ok
// false), costs such a reader one query per round instead.
type ChangeProbe interface {
	// ChangeToken returns the token, or ok false when it cannot tell
	// (the caller must then read the store). Two equal tokens with ok
	// true mean no commit came between the two calls: exactly on SQLite;
	// on PostgreSQL, no commit of this process and no other process's
	// commit whose notice has arrived (see PostgresStore.ListenForChanges).
	ChangeToken() (tok ChangeToken, ok bool)
}

// ChangeToken is a ChangeProbe's token: equal tokens mean no commit came
// between them.
type ChangeToken [walIndexHeaderBytes]byte

// walIndexHeaderBytes is the size of one copy of SQLite's WAL-index
// header. The unix and windows VFSes keep the WAL-index in the
// database's "-shm" file, whose first 96 bytes are two copies of that
// header (SQLite's "WAL-mode file format" document): a writer updates
// both at each commit (the copy at 48 second, so a reader that finds the
// two equal has not read one half-written), and the header changes at
// every commit: its frame count grows, and when the WAL starts over its
// salts change. It is what SQLite's own readers compare to learn whether
// another connection has committed.
const walIndexHeaderBytes = 48

// walProbe is the SQLite store's ChangeProbe: it reads the WAL-index
// header from the "-shm" file beside the database (two system calls,
// against a query through the driver). It answers "unknown" when the file
// is missing (not in WAL mode, an in-memory database), when the two copies
// differ (a commit is being written) or when the header was never written,
// and opens the file again when it was removed (SQLite removes it when
// the last connection of every process closes, and a new one makes
// another): a probe of the removed file would never change.
type walProbe struct {
	path string

	mu sync.Mutex
	f  *os.File
}

func newWALProbe(dbPath string) *walProbe { return &walProbe{path: dbPath + "-shm"} }

func (p *walProbe) ChangeToken() (tok ChangeToken, ok bool) {
	f := p.file()
	if f == nil {
		return tok, false
	}
	var hdr [2 * walIndexHeaderBytes]byte
	if n, err := f.ReadAt(hdr[:], 0); n != len(hdr) || err != nil {
		p.drop(f)
		return tok, false
	}
	if !bytes.Equal(hdr[:walIndexHeaderBytes], hdr[walIndexHeaderBytes:]) {
		return tok, false
	}
	// isInit, the byte at 12: 0 until a connection has built the index.
	if hdr[12] == 0 {
		return tok, false
	}
	// Read after the header: a file removed before it was read may have
	// shown a stale header; one removed after, a current one.
	if removed(f) {
		p.drop(f)
		return tok, false
	}
	copy(tok[:], hdr[:walIndexHeaderBytes])
	return tok, true
}

// file returns the open "-shm" file, opening it if need be; nil when it
// cannot be opened.
func (p *walProbe) file() *os.File {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		f, err := os.Open(p.path)
		if err != nil {
			return nil
		}
		p.f = f
	}
	return p.f
}

// drop closes f if it is still the probe's file, so the next probe opens
// the path again.
func (p *walProbe) drop(f *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == f {
		p.f.Close()
		p.f = nil
	}
}

func (p *walProbe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}
