package tlog

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
)

// Witnessing: every checkpoint the log publishes reaches its witnesses.
//
// A checkpoint becomes the log's latest in one place, publish, whoever
// signed it: the background loop, a request that needed a newer one, or
// another process sharing the store (read back by Latest or by Run's
// polling). publish offers it to each witness whose cosignature it lacks.
// Each witness has at most one request in flight: a witness worker asks it
// about the latest checkpoint, merges the cosignature into the stored
// checkpoint, and takes up the next one if the log moved on meanwhile, so
// a slow witness never holds back the others. A witness that failed is
// asked again about the same checkpoint after WitnessRetry. Requests that
// need the quorum wait for it (see awaitQuorum) at most QuorumTimeout, one
// shared timer per checkpoint.

const (
	// DefaultQuorumTimeout is how long a request that needs a witnessed
	// checkpoint waits for the quorum's cosignatures by default.
	DefaultQuorumTimeout = 5 * time.Second
	// WitnessRetry is how long after a failure a witness is asked again
	// about the same checkpoint (a new checkpoint is offered at once).
	WitnessRetry = 10 * time.Second
	// mergeAttempts bounds the compare-and-swap rounds of adding one
	// witness's cosignature while other processes add theirs.
	mergeAttempts = 8
)

// cpID names a checkpoint: its tree size and root.
type cpID struct {
	size int64
	root sumdb.Hash
}

func idOf(cp *oplog.Checkpoint) cpID { return cpID{cp.Size, cp.Root} }

// witnessState is what the log knows of one witness (guarded by
// TLog.wmu).
type witnessState struct {
	w    *Witness
	name string // the key's name: its metrics label and health name

	busy    bool      // a worker is asking it
	tried   cpID      // the checkpoint last asked about
	triedAt time.Time // when
	failed  bool      // the last request failed

	cosignedSize  int64 // the size it last cosigned for this log (-1: none yet)
	lastSuccess   time.Time
	consecutive   int64
	failuresTotal int64
	claimedSize   int64 // a size beyond the log's latest checkpoint it claimed (0: none)
}

// WitnessStatus is a witness's state, as GET /_health reports it.
type WitnessStatus struct {
	// Name is the witness's key name.
	Name string `json:"name"`
	// CosignedSize is the tree size it last cosigned (-1: none since start).
	CosignedSize int64 `json:"cosignedSize"`
	// LastSuccess is when it last cosigned (nil: not since start).
	LastSuccess *time.Time `json:"lastSuccess"`
	// ConsecutiveFailures counts its failures since its last success.
	ConsecutiveFailures int64 `json:"consecutiveFailures"`
	// FailuresTotal counts its failures since start.
	FailuresTotal int64 `json:"failuresTotal"`
	// ClaimedSize, when set, is a tree size larger than the log's latest
	// checkpoint that the witness claimed to have cosigned: not trusted,
	// and evidence of a fork or a rolled-back database.
	ClaimedSize int64 `json:"claimedSize,omitempty"`
}

// witnessMetrics are the per-witness metrics; the witness label is the
// key name of a configured witness, so its cardinality is bounded by the
// configuration.
type witnessMetrics struct {
	cosignedSize  *prometheus.GaugeVec
	lastSuccess   *prometheus.GaugeVec
	consecutive   *prometheus.GaugeVec
	failures      *prometheus.CounterVec
	quorumMissing prometheus.Counter
}

func newWitnessMetrics() *witnessMetrics {
	return &witnessMetrics{
		cosignedSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "plc_tlog_witness_cosigned_size",
			Help: "The tree size a witness last cosigned (-1: none since start).",
		}, []string{"witness"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "plc_tlog_witness_last_success_timestamp_seconds",
			Help: "When a witness last cosigned a checkpoint (Unix time; 0: not since start).",
		}, []string{"witness"}),
		consecutive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "plc_tlog_witness_consecutive_failures",
			Help: "A witness's failed add-checkpoint requests since its last success.",
		}, []string{"witness"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_tlog_witness_failures_total",
			Help: "A witness's failed add-checkpoint requests.",
		}, []string{"witness"}),
		quorumMissing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plc_tlog_quorum_missing_total",
			Help: "Checkpoints and proofs served without the witness quorum's cosignatures (the wait for it timed out).",
		}),
	}
}

// RegisterMetrics registers the log's witness metrics with reg.
func (t *TLog) RegisterMetrics(reg prometheus.Registerer) error {
	m := t.metrics
	for _, c := range []prometheus.Collector{m.cosignedSize, m.lastSuccess, m.consecutive, m.failures, m.quorumMissing} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (t *TLog) initWitnessing() {
	t.metrics = newWitnessMetrics()
	t.updated = make(chan struct{})
	for _, w := range t.opts.Witnesses {
		name, _, _ := strings.Cut(w.VKey, "+")
		t.wstate = append(t.wstate, &witnessState{w: w, name: name, cosignedSize: -1})
		t.metrics.cosignedSize.WithLabelValues(name).Set(-1)
		t.metrics.lastSuccess.WithLabelValues(name).Set(0)
		t.metrics.consecutive.WithLabelValues(name).Set(0)
		t.metrics.failures.WithLabelValues(name).Add(0)
	}
}

// WitnessStatus returns the state of each configured witness.
func (t *TLog) WitnessStatus() []WitnessStatus {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	out := make([]WitnessStatus, len(t.wstate))
	for i, s := range t.wstate {
		out[i] = WitnessStatus{Name: s.name, CosignedSize: s.cosignedSize, ConsecutiveFailures: s.consecutive,
			FailuresTotal: s.failuresTotal, ClaimedSize: s.claimedSize}
		if !s.lastSuccess.IsZero() {
			ts := s.lastSuccess.UTC()
			out[i].LastSuccess = &ts
		}
	}
	return out
}

// Health returns the transparency log's part of GET /_health: with
// witnesses configured, "witnesses" (each one's WitnessStatus) and
// "checkpoint" (the latest checkpoint's size, its verified cosignatures
// and the quorum); nil without witnesses.
func (t *TLog) Health() map[string]any {
	if len(t.opts.Witnesses) == 0 {
		return nil
	}
	h := map[string]any{"witnesses": t.WitnessStatus()}
	if cp, ok := t.current(); ok {
		have, need := t.Cosignatures(cp.Note)
		h["checkpoint"] = map[string]any{"size": cp.Size, "cosignatures": have, "quorum": need}
	}
	return h
}

// current returns the latest checkpoint this process knows.
func (t *TLog) current() (oplog.Checkpoint, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.latest == nil {
		return oplog.Checkpoint{}, false
	}
	return *t.latest, true
}

// updates returns a channel closed when the latest checkpoint this process
// knows changes (a newer one, or more cosignatures).
func (t *TLog) updates() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.updated
}

// publish makes cp the latest checkpoint this process knows, unless it
// knows a newer one (or the same one with more cosignatures), wakes what
// waits for a change, and offers cp to the witnesses.
func (t *TLog) publish(cp oplog.Checkpoint) {
	t.mu.Lock()
	cur := t.latest
	if cur != nil && (cp.Size < cur.Size || cp.Size == cur.Size && len(cp.Note) <= len(cur.Note)) {
		t.mu.Unlock()
		return
	}
	t.latest = &cp
	close(t.updated)
	t.updated = make(chan struct{})
	t.mu.Unlock()
	t.offer()
}

// startWitnessing lets offer start witness workers under ctx.
func (t *TLog) startWitnessing(ctx context.Context) {
	t.wmu.Lock()
	t.runCtx = ctx
	t.wmu.Unlock()
}

// stopWitnessing lets the workers finish their requests, and start none.
func (t *TLog) stopWitnessing() {
	t.wmu.Lock()
	t.runCtx = nil
	t.wmu.Unlock()
	t.workers.Wait()
}

// offer starts a worker for each idle witness that has work: the latest
// checkpoint lacks its cosignature, and it was not asked about it yet, or
// failed more than WitnessRetry ago. Without Run running, it does nothing.
func (t *TLog) offer() {
	if len(t.wstate) == 0 {
		return
	}
	cp, ok := t.current()
	if !ok {
		return
	}
	by := t.cosigners(cp.Note)
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.runCtx == nil {
		return
	}
	for i, s := range t.wstate {
		if s.busy || !t.due(s, &cp, by[i]) {
			continue
		}
		s.busy = true
		ctx := t.runCtx
		t.workers.Go(func() { t.witnessWorker(ctx, s) })
	}
}

// due reports whether s should be asked about cp (t.wmu held).
func (t *TLog) due(s *witnessState, cp *oplog.Checkpoint, cosigned bool) bool {
	switch {
	case cosigned:
		return false
	case s.tried != idOf(cp):
		return true
	default:
		return s.failed && t.opts.Now().Sub(s.triedAt) >= WitnessRetry
	}
}

// witnessWorker asks s's witness about the latest checkpoint until it has
// nothing left to ask (or Run stopped).
func (t *TLog) witnessWorker(ctx context.Context, s *witnessState) {
	idx := -1
	for i := range t.wstate {
		if t.wstate[i] == s {
			idx = i
		}
	}
	for first := true; ; first = false {
		// The latest checkpoint is read under wmu, so that one published
		// while the worker decides to end finds it idle (offer holds wmu
		// too).
		t.wmu.Lock()
		cp, ok := t.current()
		var by []bool
		if ok {
			by = t.cosigners(cp.Note)
		}
		// Once Run stops, the request a worker was started for is still
		// made; no further one.
		if !ok || (!first && t.runCtx == nil) || ctx.Err() != nil || !t.due(s, &cp, by[idx]) {
			s.busy = false
			t.wmu.Unlock()
			return
		}
		s.tried, s.triedAt = idOf(&cp), t.opts.Now()
		t.wmu.Unlock()

		lines, err := t.askWitness(ctx, s.w, cp)
		if errors.Is(err, errSuperseded) {
			t.opts.Logger.Debug("a witness already cosigned a newer checkpoint", "witness", s.w.String(), "size", cp.Size)
			t.wmu.Lock()
			s.failed = false
			t.wmu.Unlock()
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				t.wmu.Lock()
				s.busy = false
				t.wmu.Unlock()
				return
			}
			t.opts.Logger.Error("a witness did not cosign the checkpoint", "witness", s.w.String(), "size", cp.Size, "err", err)
			t.recordFailure(s)
			continue
		}
		t.recordSuccess(s, cp.Size)
		t.mergeCosignatures(ctx, cp, lines)
	}
}

func (t *TLog) recordFailure(s *witnessState) {
	t.wmu.Lock()
	s.failed = true
	s.consecutive++
	s.failuresTotal++
	n := s.consecutive
	t.wmu.Unlock()
	t.metrics.consecutive.WithLabelValues(s.name).Set(float64(n))
	t.metrics.failures.WithLabelValues(s.name).Inc()
}

func (t *TLog) recordSuccess(s *witnessState, size int64) {
	now := t.opts.Now()
	t.wmu.Lock()
	s.failed = false
	s.consecutive = 0
	s.cosignedSize = size
	s.lastSuccess = now
	t.wmu.Unlock()
	t.metrics.cosignedSize.WithLabelValues(s.name).Set(float64(size))
	t.metrics.lastSuccess.WithLabelValues(s.name).Set(float64(now.UnixNano()) / 1e9)
	t.metrics.consecutive.WithLabelValues(s.name).Set(0)
}

// recordClaim notes a size beyond the log's that a witness claimed.
func (t *TLog) recordClaim(w *Witness, size int64) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	for _, s := range t.wstate {
		if s.w == w {
			s.claimedSize = size
		}
	}
}

// mergeCosignatures adds a witness's verified cosignature lines for cp to
// the stored checkpoint, by compare-and-swap: when another process added
// its own meanwhile, the lines are added to its note; when a newer
// checkpoint replaced cp, they are dropped (the newer one is offered to
// the witnesses in turn).
func (t *TLog) mergeCosignatures(ctx context.Context, cp oplog.Checkpoint, lines []string) {
	t.mergeMu.Lock()
	defer t.mergeMu.Unlock()
	cur := cp
	for range mergeAttempts {
		next := cur
		next.Note = addSignatures(cur.Note, [][]string{lines})
		if bytes.Equal(next.Note, cur.Note) {
			t.publish(cur)
			return
		}
		err := t.store.SwapCheckpoint(ctx, &cur, next)
		if err == nil {
			t.opts.Logger.Debug("checkpoint cosigned", "size", cp.Size, "cosignatures", len(lines))
			t.publish(next)
			return
		}
		if !errors.Is(err, oplog.ErrCheckpointRace) {
			t.opts.Logger.Error("storing the cosigned checkpoint failed", "size", cp.Size, "err", err)
			return
		}
		if cur, err = t.store.Checkpoint(ctx); err != nil {
			t.opts.Logger.Error("reading the checkpoint to add a cosignature failed", "size", cp.Size, "err", err)
			return
		}
		if idOf(&cur) != idOf(&cp) {
			// A newer checkpoint stands.
			t.opts.Logger.Debug("cosignatures dropped: the checkpoint was replaced meanwhile", "size", cp.Size, "latest", cur.Size)
			return
		}
	}
	t.opts.Logger.Warn("cosignatures dropped: the checkpoint kept changing", "size", cp.Size)
}

// cosigners reports, for each configured witness, whether note carries a
// cosignature of it that verifies. The last answer is cached.
func (t *TLog) cosigners(note []byte) []bool {
	t.cmu.Lock()
	if t.cnote != nil && bytes.Equal(t.cnote, note) {
		by := t.cby
		t.cmu.Unlock()
		return by
	}
	t.cmu.Unlock()
	by := make([]bool, len(t.opts.Witnesses))
	text, lines := splitNote(note)
	for _, l := range lines {
		if len(l.sig) == 0 {
			continue
		}
		for i, w := range t.opts.Witnesses {
			if by[i] || w.init() != nil || w.verifier.Name() != l.name || w.verifier.KeyHash() != l.hash {
				continue
			}
			by[i] = w.verifier.Verify(text, l.sig)
		}
	}
	t.cmu.Lock()
	t.cnote, t.cby = bytes.Clone(note), by
	t.cmu.Unlock()
	return by
}

// Cosignatures returns how many of the log's witnesses (counted by key)
// cosigned the checkpoint note, verified, and how many the quorum needs
// (Options.Quorum; 0 without witnesses).
func (t *TLog) Cosignatures(note []byte) (have, need int) {
	return len(t.cosignedKeys(note)), t.quorum()
}

// cosignedKeys returns the verifier keys of the witnesses whose
// cosignatures in note verify, each once.
func (t *TLog) cosignedKeys(note []byte) []string {
	if len(t.opts.Witnesses) == 0 {
		return nil
	}
	var keys []string
	for i, ok := range t.cosigners(note) {
		if k := t.opts.Witnesses[i].VKey; ok && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// quorum is how many witnesses must cosign.
func (t *TLog) quorum() int {
	if len(t.opts.Witnesses) == 0 {
		return 0
	}
	if t.opts.Quorum <= 0 {
		return len(t.opts.Witnesses)
	}
	return t.opts.Quorum
}

// witnessed reports whether note carries the quorum (always, without
// witnesses): Options.QuorumMet decides when set, else the count.
func (t *TLog) witnessed(note []byte) bool {
	if len(t.opts.Witnesses) == 0 {
		return true
	}
	keys := t.cosignedKeys(note)
	if t.opts.QuorumMet != nil {
		return t.opts.QuorumMet(keys)
	}
	return len(keys) >= t.quorum()
}

// quorumWait is the shared timer of the requests waiting for one
// checkpoint's quorum: done closes QuorumTimeout after the first of them
// arrived.
type quorumWait struct {
	id   cpID
	done chan struct{}
}

// waitFor returns the shared wait for cp, starting it if it is new. Only
// the wait of the latest checkpoint asked about is kept: at most one timer
// runs per checkpoint, and at most one is remembered.
func (t *TLog) waitFor(cp *oplog.Checkpoint) *quorumWait {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if w := t.qwait; w != nil && w.id == idOf(cp) {
		return w
	}
	w := &quorumWait{id: idOf(cp), done: make(chan struct{})}
	if t.qwait == nil || t.qwait.id.size <= cp.Size {
		t.qwait = w
	}
	go func() {
		// The timer ends on its own: it outlives no request by more
		// than QuorumTimeout.
		t.opts.Wait(context.Background(), t.opts.QuorumTimeout)
		close(w.done)
	}()
	return w
}

// awaitQuorum returns the latest checkpoint, of at least cp's size, that
// carries the witness quorum, waiting for it at most QuorumTimeout (the
// timer of the first checkpoint waited for, shared with every request
// waiting for it). When the quorum does not arrive in time it returns the
// latest checkpoint it has and false. Without witnesses it returns cp (or
// newer) and true at once.
func (t *TLog) awaitQuorum(ctx context.Context, cp oplog.Checkpoint) (oplog.Checkpoint, bool, error) {
	if len(t.opts.Witnesses) == 0 {
		return cp, true, nil
	}
	t.publish(cp)
	var wait *quorumWait
	for {
		upd := t.updates()
		cur, _ := t.current() // publish(cp) made it at least cp
		if t.witnessed(cur.Note) {
			return cur, true, nil
		}
		if wait == nil {
			wait = t.waitFor(&cur)
		}
		select {
		case <-upd:
		case <-wait.done:
			cur, _ = t.current()
			if t.witnessed(cur.Note) {
				return cur, true, nil
			}
			t.metrics.quorumMissing.Inc()
			return cur, false, nil
		case <-ctx.Done():
			return cur, false, ctx.Err()
		}
	}
}

// The response headers of a checkpoint, or of proofs against it, served
// by a log with witnesses.
const (
	// HeaderWitnessQuorum is "met" when the checkpoint carries the
	// quorum's cosignatures, "missing" when the wait for them ended
	// without it.
	HeaderWitnessQuorum = "PLC-Witness-Quorum"
	// HeaderWitnessCosignatures is "<have>/<need>": the configured
	// witnesses whose cosignatures the checkpoint carries (verified), and
	// the quorum.
	HeaderWitnessCosignatures = "PLC-Witness-Cosignatures"
)

// SetWitnessHeaders sets HeaderWitnessQuorum and HeaderWitnessCosignatures
// for the checkpoint note (nothing without witnesses).
func (t *TLog) SetWitnessHeaders(h http.Header, note []byte) {
	if len(t.opts.Witnesses) == 0 {
		return
	}
	have, need := t.Cosignatures(note)
	q := "met"
	if !t.witnessed(note) {
		q = "missing"
	}
	h.Set(HeaderWitnessQuorum, q)
	h.Set(HeaderWitnessCosignatures, strconv.Itoa(have)+"/"+strconv.Itoa(need))
}
