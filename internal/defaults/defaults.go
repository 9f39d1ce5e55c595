// Package defaults fills in the options a caller left unset: the one way
// a constructor gives a numeric option its default.
package defaults

// Positive sets *v to def unless *v is positive: for an option whose zero
// (or a negative value) means "the default".
func Positive[T ~int | ~int32 | ~int64 | ~float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
