package oplog

import (
	"errors"
	"time"

	"github.com/plcdir/plc/validate"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the log's Prometheus measurements. A nil *Metrics records
// nothing.
type Metrics struct {
	acceptedOps prometheus.Counter
	rejectedOps *prometheus.CounterVec
	batchSize   prometheus.Histogram
	commitTime  prometheus.Histogram
	latestSeq   prometheus.Gauge
	storage     *prometheus.CounterVec
}

// NewMetrics creates the log's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		acceptedOps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plc_ops_accepted_total", Help: "Operations accepted and committed.",
		}),
		rejectedOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_ops_rejected_total", Help: "Operations rejected, by reason.",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "plc_commit_batch_ops", Help: "Operations per committed transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "plc_commit_seconds", Help: "Time to validate and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		latestSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "plc_log_seq", Help: "Seq of the latest op committed by this process.",
		}),
		storage: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_storage_failures_total", Help: "Failed reads and append transactions of the log's database, by kind (full, unavailable).",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.acceptedOps, m.rejectedOps, m.batchSize, m.commitTime, m.latestSeq, m.storage)
	return m
}

func (m *Metrics) accepted() {
	if m != nil {
		m.acceptedOps.Inc()
	}
}

// RejectReason names an error's class for metrics: a bounded set.
func RejectReason(err error) string {
	var conflict *ConflictError
	switch {
	case errors.As(err, &conflict):
		return "conflict"
	case errors.Is(err, ErrBadLine):
		return "bad_line"
	case errors.Is(err, ErrFutureOp):
		return "future"
	case errors.Is(err, validate.ErrMalformed):
		return "malformed"
	case errors.Is(err, validate.ErrInvalidKey):
		return "invalid_key"
	case errors.Is(err, validate.ErrInvalidSignature):
		return "invalid_signature"
	case errors.Is(err, validate.ErrMisordered):
		return "misordered"
	case errors.Is(err, validate.ErrLateRecovery):
		return "late_recovery"
	case errors.Is(err, validate.ErrGenesisHash):
		return "genesis_hash"
	case errors.Is(err, validate.ErrLimit):
		return "limit"
	case errors.Is(err, validate.ErrRateLimit):
		return "rate_limit"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, ErrStorage):
		return "storage"
	case errors.As(err, new(*ClockBehindError)):
		return "clock_behind"
	}
	return "error"
}

func (m *Metrics) rejected(err error) {
	if m != nil {
		m.rejectedOps.WithLabelValues(RejectReason(err)).Inc()
	}
}

// Rejected counts a rejection decided outside the log (parse errors,
// submission limits).
func (m *Metrics) Rejected(err error) { m.rejected(err) }

func (m *Metrics) committed(n int, d time.Duration, seq int64) {
	if m != nil {
		m.batchSize.Observe(float64(n))
		m.commitTime.Observe(d.Seconds())
		m.latestSeq.Set(float64(seq))
	}
}

func (m *Metrics) storageFailed(kind string) {
	if m != nil {
		m.storage.WithLabelValues(kind).Inc()
	}
}
