package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/plcdir/plc/oplog"
)

// The evidence cap. Divergence records keep the upstream's bytes, and an
// upstream decides how many it sends: without a bound, a junk-filling
// upstream writes gigabytes of "evidence" in seconds. So the records of
// the mirror's source are capped, in rows (MaxEvidenceRows) and in bytes
// (MaxEvidenceBytes, as oplog.RejectionBytes counts them). Once the cap is
// reached, divergences are still found, never applied, and counted
// (plc_mirror_divergences_total, plc_mirror_evidence_dropped_total,
// /_health's evidence), but no longer stored; the mirror says so in its
// log, once. And a batch that is mostly rejected ends the round
// (errMostlyRejected) after it commits: Run backs off before asking for
// more.

// Defaults of the evidence cap.
const (
	DefaultMaxEvidenceRows  = 100_000
	DefaultMaxEvidenceBytes = 256 << 20
)

// errMostlyRejected: a batch of upstream lines was mostly rejected.
var errMostlyRejected = errors.New("most of the upstream's lines were rejected")

// mostlyRejected reports whether rejected lines of n are "a page mostly
// rejected": over half of them, and at least a page's worth
// (mostlyRejectedMin at most), so that a few bad ops among a handful of
// stream events do not end the round.
func (m *Mirror) mostlyRejected(rejected, n int) bool {
	return 2*rejected > n && rejected >= min(mostlyRejectedMin, m.cfg.PageSize)
}

const mostlyRejectedMin = 16

// evidence is what the mirror knows of its stored records.
type evidence struct {
	// write is held while records are written (and while their size is
	// first read), so that what is stored stays within the cap; mu guards
	// the fields below, which /_health reads without waiting for a write.
	write sync.Mutex
	mu    sync.Mutex

	loaded  bool  // rows and bytes were read from the store
	rows    int64 // records stored (of the mirror's source)
	bytes   int64 // their bytes (oplog.RejectionBytes)
	dropped int64 // records not stored since the start: the cap was reached
	// droppedLine is the last source line rejected and not stored (see
	// heldAt).
	droppedLine int64
}

// EvidenceStatus is what /_health tells of the stored evidence.
type EvidenceStatus struct {
	// Rows and Bytes are the records stored and their bytes (0 until read
	// from the store, at the first round).
	Rows, Bytes int64
	// MaxRows and MaxBytes are the cap.
	MaxRows, MaxBytes int64
	// Dropped counts the records not stored since the mirror started.
	Dropped int64
	// Full: the cap is reached; records are counted, not stored.
	Full bool
}

func (m *Mirror) evidenceStatus() EvidenceStatus {
	e := &m.ev
	e.mu.Lock()
	defer e.mu.Unlock()
	return EvidenceStatus{Rows: e.rows, Bytes: e.bytes, MaxRows: m.cfg.MaxEvidenceRows, MaxBytes: m.cfg.MaxEvidenceBytes,
		Dropped: e.dropped, Full: e.dropped > 0 || e.rows >= m.cfg.MaxEvidenceRows || e.bytes >= m.cfg.MaxEvidenceBytes}
}

// loadEvidence reads the size of the stored records once (the first
// round does it; a failure is tried again by the next write).
func (m *Mirror) loadEvidence(ctx context.Context) error {
	m.ev.write.Lock()
	defer m.ev.write.Unlock()
	_, err := m.roomLocked(ctx)
	return err
}

// roomLocked is what the records may still store. m.ev.write is held.
func (m *Mirror) roomLocked(ctx context.Context) (oplog.RejectionLimit, error) {
	e := &m.ev
	e.mu.Lock()
	loaded := e.loaded
	e.mu.Unlock()
	if !loaded {
		var rows, bytes int64
		if st, ok := m.store.(oplog.Stats); ok {
			var err error
			if rows, bytes, err = st.RejectionSize(ctx, m.source); err != nil {
				return oplog.RejectionLimit{}, fmt.Errorf("reading the size of the stored divergences: %w", err)
			}
		}
		e.mu.Lock()
		e.rows, e.bytes, e.loaded = rows, bytes, true
		e.mu.Unlock()
		m.metrics.evidenceRows.Set(float64(rows))
		m.metrics.evidenceBytes.Set(float64(bytes))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return oplog.RejectionLimit{Rows: max(0, m.cfg.MaxEvidenceRows-e.rows), Bytes: max(0, m.cfg.MaxEvidenceBytes-e.bytes)}, nil
}

// countedLocked accounts for records stored and records dropped.
// m.ev.write is held.
func (m *Mirror) countedLocked(stored, dropped []oplog.Rejection) {
	e := &m.ev
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rj := range stored {
		e.rows++
		e.bytes += oplog.RejectionBytes(rj)
	}
	m.metrics.evidenceRows.Set(float64(e.rows))
	m.metrics.evidenceBytes.Set(float64(e.bytes))
	if len(dropped) == 0 {
		return
	}
	for _, rj := range dropped {
		e.droppedLine = max(e.droppedLine, rj.Line)
	}
	if e.dropped == 0 {
		m.logger.Warn("mirror: the cap of stored divergences is reached: divergences are still found and counted, but no longer stored",
			"rows", e.rows, "bytes", e.bytes, "maxRows", m.cfg.MaxEvidenceRows, "maxBytes", m.cfg.MaxEvidenceBytes)
	}
	e.dropped += int64(len(dropped))
	m.metrics.evidenceDropped.Add(float64(len(dropped)))
}

// ingest commits a batch of upstream lines (a backfill batch, stream
// events) within the evidence cap, and counts what it did. A batch that
// is mostly rejected is committed, then reported as errMostlyRejected.
func (m *Mirror) ingest(ctx context.Context, source string, items []oplog.IngestItem) (oplog.IngestResult, error) {
	m.ev.write.Lock()
	room, err := m.roomLocked(ctx)
	if err != nil {
		m.ev.write.Unlock()
		return oplog.IngestResult{}, err
	}
	res, err := m.log.IngestWithin(ctx, source, items, room)
	if err == nil {
		m.countedLocked(res.Rejected[:res.Stored], res.Rejected[res.Stored:])
	}
	m.ev.write.Unlock()
	if err != nil {
		return res, err
	}
	m.metrics.ops.Add(float64(len(res.Entries)))
	m.metrics.cursor.Set(float64(res.Cursor.Seq))
	for _, rj := range res.Rejected {
		m.metrics.divergences.WithLabelValues(string(rj.Kind)).Inc()
	}
	if n := len(res.Rejected); m.mostlyRejected(n, len(items)) {
		return res, fmt.Errorf("%w: %d of %d lines, up to seq %d (backing off)", errMostlyRejected, n, len(items), res.Cursor.Seq)
	}
	return res, nil
}

// droppedAt reports whether the line of the mirror's source at line may
// have been rejected and not stored, the cap being reached: what the
// mirror took there is then not known, and is not checked (see heldAt).
// Past the cap (or so near it that a line may not have fitted), any line
// may have been, by this process or an earlier one.
func (m *Mirror) droppedAt(line int64) bool {
	m.ev.mu.Lock()
	defer m.ev.mu.Unlock()
	e := &m.ev
	if line > 0 && e.droppedLine == line {
		return true
	}
	// A rejected line is at most MaxLineBytes and a short reason.
	return e.rows >= m.cfg.MaxEvidenceRows || e.bytes > m.cfg.MaxEvidenceBytes-(oplog.MaxLineBytes+4<<10)
}

// startEvidence reads the size of the stored records, for /_health, before
// the first round (a failure is logged; the first write tries again).
func (m *Mirror) startEvidence(ctx context.Context) {
	if err := m.loadEvidence(ctx); err != nil && ctx.Err() == nil {
		m.logger.Warn("mirror: reading the size of the stored divergences failed", "err", err)
	}
}
