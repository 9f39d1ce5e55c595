package oplog

import "time"

// PretendPrimaryIs makes rr take id as the primary's system identifier
// and identify its replicas again at the next Check.
func PretendPrimaryIs(rr *ReadRouter, id int64) {
	rr.primaryID = id
	for _, r := range rr.replicas {
		r.verified.Store(false)
	}
}

// SetListenRetryForTest sets the first wait before s's listener connects
// again.
func SetListenRetryForTest(s *PostgresStore, d time.Duration) { s.listenRetry = d }
