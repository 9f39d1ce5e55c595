package tlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/oplog"
)

const (
	// WitnessTimeout bounds one add-checkpoint request.
	WitnessTimeout = 10 * time.Second
	// maxWitnessResponse bounds a witness's answer (a few signature lines).
	maxWitnessResponse = 64 << 10
	// maxProofLines is the most consistency proof lines tlog-witness allows.
	maxProofLines = 63
)

// Witness is a C2SP tlog-witness the log asks to cosign its checkpoints.
// Build it with ParseWitness; a Witness built by hand is checked when it
// is first used.
type Witness struct {
	// URL is the witness's submission prefix (add-checkpoint is POSTed
	// under it).
	URL string
	// VKey is the witness's verifier key: a C2SP tlog-cosignature key,
	// Ed25519 (type 0x04) or ML-DSA-44 (type 0x06); see
	// NewCosignatureVerifier.
	VKey string
	// Client sends the requests (nil: one with client.DefaultTimeout;
	// each request is bounded by WitnessTimeout anyway).
	Client *http.Client

	once     sync.Once
	verifier note.Verifier
	peer     *client.Client
	initErr  error

	cosigned atomic.Int64 // the tree size the witness last cosigned, as far as the log knows
}

// ParseWitness parses the flag form of a witness, URL=VKEY: an http(s)
// URL (without query or fragment) and the witness's cosignature
// verifier key (see NewCosignatureVerifier).
func ParseWitness(s string) (*Witness, error) {
	u, vkey, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || u == "" || vkey == "" {
		return nil, errors.New("want URL=VKEY: the witness's URL and its verifier key")
	}
	w := &Witness{URL: u, VKey: vkey}
	if err := w.init(); err != nil {
		return nil, err
	}
	return w, nil
}

// init checks the URL and parses the key, once.
func (w *Witness) init() error {
	w.once.Do(func() {
		w.peer, w.initErr = client.New(w.URL, w.Client)
		if w.initErr != nil {
			w.initErr = fmt.Errorf("witness URL: %w", w.initErr)
			return
		}
		w.peer = w.peer.WithPeer("the witness")
		w.verifier, w.initErr = NewCosignatureVerifier(w.VKey)
	})
	return w.initErr
}

// String names the witness in messages: its key name and URL (without
// any password).
func (w *Witness) String() string {
	name, _, _ := strings.Cut(w.VKey, "+")
	return name + " at " + client.RedactURL(w.URL)
}

// NewCosignatureVerifier returns the note.Verifier of a C2SP
// tlog-cosignature key, <name>+<hash>+<base64(type || public key)>, of
// either kind:
//
//   - Ed25519 (type 0x04): a timestamp and an Ed25519 signature of
//     "cosignature/v1\ntime <timestamp>\n" || the checkpoint text
//     (CosignatureMessage);
//   - ML-DSA-44 (type 0x06): a timestamp and an ML-DSA-44 signature of
//     the subtree/v1 message of the checkpoint (SubtreeMessage); a
//     checkpoint with extension lines, which it would not cover, never
//     verifies.
//
// (golang.org/x/mod/sumdb/note's own verifiers know type 0x01 only.)
// tlog-witness requires witnesses to answer with cosignatures, so plain
// Ed25519 note keys (type 0x01) are refused with an explanation.
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	vkey = strings.TrimSpace(vkey)
	// The name has no '+'; the base64 key may.
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("verifier key %q: want <name>+<hash>+<key>", vkey)
	}
	if !validKeyName(name) {
		return nil, fmt.Errorf("verifier key %q: bad key name %q", vkey, name)
	}
	h, err := hex.DecodeString(hash16)
	if err != nil || len(h) != 4 {
		return nil, fmt.Errorf("verifier key %q: the key hash %q is not 8 hex digits", vkey, hash16)
	}
	key, err := base64.StdEncoding.DecodeString(key64)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("verifier key %q: the key is not base64", vkey)
	}
	v, err := cosignatureVerifierFor(vkey, name, key)
	if err != nil {
		return nil, err
	}
	if v.KeyHash() != binary.BigEndian.Uint32(h) {
		return nil, fmt.Errorf("verifier key %q: the key hash does not match the key (want %08x)", vkey, v.KeyHash())
	}
	return v, nil
}

// keyID is the signed-note key ID: SHA-256(name || "\n" || type || key)[:4].
func keyID(name string, typedKey []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(typedKey)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName is signed-note's rule: non-empty UTF-8 without spaces or '+'.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

type cosignatureVerifier struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a timestamped_signature (8-byte big-endian timestamp ||
// Ed25519 signature) over the cosignature/v1 message of msg.
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.pub, CosignatureMessage(ts, msg), sig[8:])
}

// CosignatureMessage is what a cosignature/v1 signature at POSIX time ts
// signs over the checkpoint text.
func CosignatureMessage(ts uint64, text []byte) []byte {
	m := make([]byte, 0, 40+len(text))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// addSignatures appends signature lines to a signed note, skipping those
// whose key (name and hash) already signed it.
func addSignatures(msg []byte, lines [][]string) []byte {
	split := bytes.LastIndex(msg, []byte("\n\n"))
	if split < 0 {
		return msg
	}
	have := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(string(msg[split+2:]), "\n"), "\n") {
		have[sigKey(l)] = true
	}
	out := bytes.Clone(msg)
	for _, ls := range lines {
		for _, l := range ls {
			if k := sigKey(l); !have[k] {
				have[k] = true
				out = append(out, l...)
				out = append(out, '\n')
			}
		}
	}
	return out
}

// sigLine is a signature line of a signed note: "— NAME BASE64", whose
// decoded bytes start with the 4-byte key ID.
type sigLine struct {
	line string // the line, without its newline
	name string
	hash uint32 // the key ID
	sig  []byte // what follows the key ID
}

// splitNote returns the text of the signed note msg (up to and with the
// newline before the blank line) and its signature lines that parse; no
// text when msg has no signature block.
func splitNote(msg []byte) (text []byte, lines []sigLine) {
	split := bytes.LastIndex(msg, []byte("\n\n"))
	if split < 0 {
		return nil, nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(msg[split+2:]), "\n"), "\n") {
		name, b64, ok := strings.Cut(strings.TrimPrefix(l, "— "), " ")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || len(raw) < 4 {
			continue
		}
		lines = append(lines, sigLine{line: l, name: name, hash: binary.BigEndian.Uint32(raw), sig: raw[4:]})
	}
	return msg[:split+1], lines
}

// sigKey returns the name and key ID of a signature line.
func sigKey(line string) string {
	name, b64, _ := strings.Cut(strings.TrimPrefix(line, "— "), " ")
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) < 4 {
		return line
	}
	return name + "+" + hex.EncodeToString(sig[:4])
}

// witnessConflict is a witness's 409 answer: the size it last cosigned.
type witnessConflict struct{ size int64 }

func (c *witnessConflict) Error() string {
	return fmt.Sprintf("409 Conflict: the witness last cosigned tree size %d", c.size)
}

// errSuperseded: the witness already cosigned a newer checkpoint of the
// log than the one it was asked about (another process sent it one): not
// a failure, the newer checkpoint is offered in turn.
var errSuperseded = errors.New("the witness already cosigned a newer checkpoint of this log")

// askWitness runs add-checkpoint for cp with w and returns the verified
// cosignature lines. A 409 Conflict (the witness cosigned another size
// than the log remembered: the log or the witness restarted, or another
// process sharing the store asked it) is retried from the witness's size,
// with a consistency proof from it, when that size is one the log
// signed; a size larger than the log's latest checkpoint is reported and
// not trusted.
func (t *TLog) askWitness(ctx context.Context, w *Witness, cp oplog.Checkpoint) ([]string, error) {
	if err := w.init(); err != nil {
		return nil, err
	}
	_, n, err := OpenCheckpoint(cp.Note, t.key.Verifier)
	if err != nil {
		return nil, fmt.Errorf("the checkpoint does not open with the log's key: %w", err)
	}
	old := w.cosigned.Load()
	if old > cp.Size {
		return nil, errSuperseded
	}
	for attempt := 0; ; attempt++ {
		lines, err := t.addCheckpoint(ctx, w, old, cp, n.Text)
		var c *witnessConflict
		switch {
		case err == nil:
			w.cosigned.Store(cp.Size)
			return lines, nil
		case !errors.As(err, &c):
			return nil, err
		}
		switch {
		case c.size == old && old == cp.Size:
			return nil, fmt.Errorf("%w, the size of this checkpoint, with another root hash: the witness saw a fork of this log", err)
		case c.size == old:
			return nil, fmt.Errorf("%w, the old size sent", err)
		case c.size > cp.Size:
			latest, rerr := t.store.Checkpoint(ctx)
			if rerr != nil {
				return nil, fmt.Errorf("%w; reading the log's latest checkpoint: %v", err, rerr)
			}
			if c.size > latest.Size {
				t.recordClaim(w, c.size)
				return nil, fmt.Errorf("%w, beyond the log's latest checkpoint (size %d): not trusted: "+
					"the witness saw another log under this origin or a fork, or the database was rolled back", err, latest.Size)
			}
			w.cosigned.Store(c.size)
			return nil, errSuperseded
		case attempt >= 2:
			return nil, err
		}
		w.cosigned.Store(c.size)
		t.opts.Logger.Info("a witness holds another size than the log remembered: bringing it forward with a consistency proof from its size",
			"witness", w.String(), "old", old, "witness_size", c.size, "size", cp.Size)
		old = c.size
	}
}

// addCheckpoint POSTs one add-checkpoint request.
func (t *TLog) addCheckpoint(ctx context.Context, w *Witness, old int64, cp oplog.Checkpoint, text string) ([]string, error) {
	var proof sumdb.TreeProof
	if old > 0 && old < cp.Size {
		p, err := t.ConsistencyProof(ctx, old, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("consistency proof %d → %d: %w", old, cp.Size, err)
		}
		proof = p
	}
	if len(proof) > maxProofLines {
		return nil, fmt.Errorf("the consistency proof %d → %d has %d hashes, more than tlog-witness allows", old, cp.Size, len(proof))
	}
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	for _, h := range proof {
		body.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		body.WriteByte('\n')
	}
	body.WriteByte('\n')
	body.Write(cp.Note)

	ctx, cancel := context.WithTimeout(ctx, WitnessTimeout)
	defer cancel()
	status, b, err := w.peer.Post(ctx, "/add-checkpoint", "text/plain; charset=utf-8", body.Bytes(), maxWitnessResponse, http.StatusConflict)
	if err != nil {
		return nil, err
	}
	if status == http.StatusOK {
		return verifyCosignatures(w.verifier, text, b)
	}
	s := strings.TrimSuffix(string(b), "\n")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
		return nil, fmt.Errorf("409 Conflict without a tree size: %s", client.Printable(s, 200))
	}
	return nil, &witnessConflict{n}
}

// verifyCosignatures checks a witness's answer: signature lines, of which
// those by the witness's key must verify (at least one), others being
// ignored. It returns the witness's lines.
func verifyCosignatures(v note.Verifier, text string, answer []byte) ([]string, error) {
	s := string(answer)
	if s == "" || !strings.HasSuffix(s, "\n") {
		return nil, fmt.Errorf("the answer is not signature lines: %s", client.Printable(s, 200))
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if !strings.HasPrefix(line, "— ") {
			return nil, fmt.Errorf("the answer is not signature lines: %s", client.Printable(s, 200))
		}
		_, err := note.Open([]byte(text+"\n"+line+"\n"), note.VerifierList(v))
		var unknown *note.UnverifiedNoteError
		switch {
		case errors.As(err, &unknown):
			continue // another key's: ignored
		case err != nil:
			return nil, fmt.Errorf("the cosignature does not verify with the witness's key %s: %w", v.Name(), err)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the answer holds no cosignature by the witness's key %s", v.Name())
	}
	return out, nil
}
