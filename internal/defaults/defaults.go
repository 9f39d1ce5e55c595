// Package defaults fills in the options a caller left unset: the one way
// a constructor gives a numeric option its default, and the default of a
// Wait option.
package defaults

import (
	"context"
	"time"
)

// Positive sets *v to def unless *v is positive: for an option whose zero
// (or a negative value) means "the default".
func Positive[T ~int | ~int32 | ~int64 | ~float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Sleep waits for d or until ctx is done (its error then): the default of
// an option that waits between retries or rounds, which tests replace to
// run without real time.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
