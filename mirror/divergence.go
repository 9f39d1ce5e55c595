package mirror

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Divergence is a record of the upstream serving something the rules
// reject or that contradicts what it served before.
type Divergence struct {
	Kind     oplog.RejectionKind
	DID, CID string
	// Detail says what was found.
	Detail string
	// Evidence is what the upstream sent, as it sent it.
	Evidence []byte
}

// Divergences are stored as the rejections of the mirror's source, each
// with its kind: the ops and lines Import rejected are there already, with
// their reasons; the others are written with a reason that starts with
// their kind, as the listing has always shown them.

func (d Divergence) reason() string { return string(d.Kind) + ": " + d.Detail }

// maxEvidence bounds the evidence kept with a divergence.
const maxEvidence = 1 << 20

// record stores d and counts it, unless the same record — the same kind,
// DID, CID, detail and evidence — is stored already, by this process or an
// earlier one: an upstream that sends the same bad answer on every retry
// is recorded once, and a different answer again. Records made in this
// process are remembered (by a hash of the record); the others are looked
// up in the store.
func (m *Mirror) record(ctx context.Context, d Divergence) {
	raw := d.Evidence
	if raw == nil {
		raw = []byte{}
	}
	if len(raw) > maxEvidence {
		raw = raw[:maxEvidence]
	}
	rj := oplog.Rejection{Source: m.source, DID: d.DID, CID: d.CID, Raw: raw, Kind: d.Kind, Reason: d.reason()}
	key := recordKey(rj)
	m.mu.Lock()
	if m.recorded[key] {
		m.mu.Unlock()
		return
	}
	if len(m.recorded) > 100_000 {
		m.recorded = map[[sha256.Size]byte]bool{}
	}
	m.recorded[key] = true // a concurrent record of the same returns at once
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.recorded, key)
		m.mu.Unlock()
	}
	found, err := m.store.HasRejection(ctx, rj)
	if err != nil {
		forget() // looked up again next time
		m.logger.Warn("mirror: could not look up a divergence", "kind", d.Kind, "err", err)
		return
	}
	if found {
		return // recorded by an earlier run
	}
	rj.CreatedAt = m.cfg.Now().UTC().Truncate(time.Millisecond)
	m.ev.write.Lock()
	room, err := m.roomLocked(ctx)
	if err == nil && (room.Rows < 1 || oplog.RejectionBytes(rj) > room.Bytes) {
		// Past the cap: counted (once, as a stored one would be), not stored.
		m.countedLocked(nil, []oplog.Rejection{rj})
		m.ev.write.Unlock()
		m.metrics.divergences.WithLabelValues(string(d.Kind)).Inc()
		return
	}
	if err == nil {
		if err = m.log.Reject(ctx, rj); err == nil {
			m.countedLocked([]oplog.Rejection{rj}, nil)
		}
	}
	m.ev.write.Unlock()
	if err != nil {
		forget()
		if !errors.Is(err, oplog.ErrStorage) { // the log reports those
			m.logger.Warn("mirror: could not record a divergence", "kind", d.Kind, "err", err)
		}
		return
	}
	m.metrics.divergences.WithLabelValues(string(d.Kind)).Inc()
	m.logger.Warn("mirror: divergence", "kind", d.Kind, "did", d.DID, "cid", d.CID, "detail", d.Detail)
}

// recordKey identifies a record by its content: a hash of its DID, CID,
// reason (kind and detail) and evidence, each length-prefixed.
func recordKey(rj oplog.Rejection) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range [][]byte{[]byte(rj.DID), []byte(rj.CID), []byte(rj.Reason), rj.Raw} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// Bounds of GET /_mirror/divergences.
const (
	// DefaultDivergencesResponseBytes is the default of
	// Config.DivergencesResponseBytes.
	DefaultDivergencesResponseBytes = 2 << 20
	// divergencesChunk is the number of records read from the store at a
	// time: what one answer holds in memory is at most this many records
	// (of at most maxEvidence bytes each) and one of them encoded.
	divergencesChunk = 8
	// divergencesConcurrency bounds the answers being written at once;
	// more wait at most divergencesQueueWait, then get 503.
	divergencesConcurrency = 4
	divergencesQueueWait   = 5 * time.Second
)

// divergenceItem is one record as GET /_mirror/divergences lists it.
type divergenceItem struct {
	ID               int64               `json:"id"`
	Kind             oplog.RejectionKind `json:"kind"`
	DID              string              `json:"did,omitempty"`
	CID              string              `json:"cid,omitempty"`
	Reason           string              `json:"reason"`
	Evidence         string              `json:"evidence"`
	EvidenceEncoding string              `json:"evidenceEncoding,omitempty"`
	CreatedAt        string              `json:"createdAt"`
}

func newDivergenceItem(rj oplog.Rejection) divergenceItem {
	it := divergenceItem{ID: rj.ID, Kind: rj.Kind, DID: rj.DID, CID: rj.CID, Reason: rj.Reason,
		CreatedAt: string(validate.AppendTimestamp(nil, rj.CreatedAt))}
	if utf8.Valid(rj.Raw) {
		it.Evidence = string(rj.Raw)
	} else {
		it.Evidence, it.EvidenceEncoding = base64.StdEncoding.EncodeToString(rj.Raw), "base64"
	}
	return it
}

// Handler serves GET /_mirror/divergences?after=ID&limit=N: the records in
// ID order, as JSON, written as they are read from the store (a few at a
// time). An answer stops early, before limit records, once it holds
// DivergencesResponseBytes (it always holds at least one record when there
// is one): it then says "more": true, and its cursor is the after= that
// continues it. At most a few answers are written at once; others wait
// briefly, then get 503 with Retry-After.
func (m *Mirror) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(status int, msg string) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(status)
			b, _ := json.Marshal(map[string]string{"message": msg})
			w.Write(b)
		}
		if r.URL.Path != "/_mirror/divergences" {
			fail(http.StatusNotFound, "Not Found")
			return
		}
		after, limit := int64(0), 100
		q := r.URL.Query()
		if v := q.Get("after"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				fail(http.StatusBadRequest, "Invalid after parameter: want a record id")
				return
			}
			after = n
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				fail(http.StatusBadRequest, "Invalid limit parameter: want 1 to 1000")
				return
			}
			limit = n
		}
		ctx := r.Context()
		select {
		case m.listing <- struct{}{}:
		default:
			select {
			case m.listing <- struct{}{}:
			case <-m.cfg.After(divergencesQueueWait):
				w.Header().Set("Retry-After", "5")
				fail(http.StatusServiceUnavailable, "Too many divergence listings at once; try again later")
				return
			case <-ctx.Done():
				return
			}
		}
		defer func() { <-m.listing }()
		asked := min(limit, divergencesChunk)
		rs, err := m.store.Rejections(ctx, m.source, after, asked)
		if err != nil {
			m.logger.Error("mirror: reading divergences", "err", err)
			w.Header().Set("Retry-After", "5")
			fail(http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		bw := bufio.NewWriterSize(w, 32<<10)
		bw.WriteString(`{"divergences":[`)
		var (
			n, written int
			more       bool
			cursor     = after
		)
	list:
		for {
			for _, rj := range rs {
				b, err := json.Marshal(newDivergenceItem(rj))
				if err != nil {
					m.logger.Error("mirror: encoding a divergence", "id", rj.ID, "err", err)
					more = true
					break list
				}
				if n > 0 && written+len(b)+1 > m.cfg.DivergencesResponseBytes {
					more = true
					break list
				}
				if n > 0 {
					bw.WriteByte(',')
				}
				bw.Write(b)
				n, written, cursor = n+1, written+len(b)+1, rj.ID
			}
			if n >= limit || len(rs) < asked {
				break // as many as asked for, or all there are
			}
			asked = min(limit-n, divergencesChunk)
			rs, err = m.store.Rejections(ctx, m.source, cursor, asked)
			if err != nil {
				// The status is sent: the answer ends here, and its cursor
				// continues it.
				if ctx.Err() == nil {
					m.logger.Error("mirror: reading divergences", "err", err)
				}
				more = true
				break
			}
			if len(rs) == 0 {
				break
			}
		}
		fmt.Fprintf(bw, `],"cursor":%d`, cursor)
		if more {
			bw.WriteString(`,"more":true`)
		}
		bw.WriteString("}")
		bw.Flush()
	})
}

type metrics struct {
	divergences                 *prometheus.CounterVec
	ops                         prometheus.Counter
	upstreamErrors              prometheus.Counter
	cursor, lag                 prometheus.Gauge
	evidenceRows, evidenceBytes prometheus.Gauge
	evidenceDropped             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		divergences: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plc_mirror_divergences_total",
			Help: "Divergences found in the upstream, by kind."}, []string{"kind"}),
		ops: prometheus.NewCounter(prometheus.CounterOpts{Name: "plc_mirror_ops_total",
			Help: "Upstream ops applied."}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "plc_mirror_upstream_errors_total",
			Help: "Rounds that ended with an upstream failure."}),
		cursor: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plc_mirror_cursor_seq",
			Help: "The last upstream seq applied."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plc_mirror_lag_seconds",
			Help: "How far the mirror's latest op is behind the clock while backfilling."}),
		evidenceRows: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plc_mirror_evidence_rows",
			Help: "Divergence records stored."}),
		evidenceBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plc_mirror_evidence_bytes",
			Help: "Bytes of the divergence records stored (evidence, reason, DID, CID)."}),
		evidenceDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "plc_mirror_evidence_dropped_total",
			Help: "Divergences counted but not stored: the cap of stored records was reached."}),
	}
	if reg != nil {
		reg.MustRegister(m.divergences, m.ops, m.upstreamErrors, m.cursor, m.lag, m.evidenceRows, m.evidenceBytes, m.evidenceDropped)
	}
	return m
}
