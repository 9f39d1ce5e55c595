package validate

import (
	"time"
	"unicode/utf16"
)

// Submission limits (PLC-REFERENCE §3). They apply to new submissions only;
// history replayed from another directory or an export is judged by the
// chain rules alone.
const (
	MaxOpBytes                  = 4000
	MaxAlsoKnownAs              = 10
	MaxAlsoKnownAsLength        = 258
	MaxRotationKeys             = 10
	MaxServices                 = 10
	MaxServiceTypeLength        = 256
	MaxServiceEndpointLength    = 512
	MaxVerificationMethods      = 10
	MaxIDLength                 = 32
	MaxVerificationMethodKeyLen = 256
	RateLimitHour, RateLimitDay = 10, 30
	RateLimitWeek               = 100
)

// jsLen is the length of s as JavaScript counts it (UTF-16 code units),
// which is how the reference measures every limit.
func jsLen(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// CheckSubmission applies the limits a directory puts on newly submitted
// ops, in the reference's order, with its messages. Legacy create ops are
// rejected outright.
func CheckSubmission(op *Op) error {
	if len(op.signed) > MaxOpBytes {
		return newErr(ErrLimit, "Operation too large (%d bytes maximum in cbor encoding)", MaxOpBytes)
	}
	o := &op.op
	switch o.Type {
	case TypeCreate:
		return &Error{Class: ErrLimit, Message: "Not a valid operation: " + string(op.AppendJSON(nil))}
	case TypeTombstone:
		return nil
	}
	if len(o.AlsoKnownAs) > MaxAlsoKnownAs {
		return newErr(ErrLimit, "To many alsoKnownAs entries (max %d)", MaxAlsoKnownAs)
	}
	seen := make(map[string]bool, len(o.AlsoKnownAs))
	for _, aka := range o.AlsoKnownAs {
		if jsLen(aka) > MaxAlsoKnownAsLength {
			return newErr(ErrLimit, "alsoKnownAs entry too long (max %d): %s", MaxAlsoKnownAsLength, aka)
		}
		if seen[aka] {
			return newErr(ErrLimit, "duplicate alsoKnownAs entry: %s", aka)
		}
		seen[aka] = true
	}
	if len(o.RotationKeys) > MaxRotationKeys {
		return newErr(ErrLimit, "Too many rotationKey entries (max %d)", MaxRotationKeys)
	}
	for _, k := range o.RotationKeys {
		if _, err := ParseDIDKey(k); err != nil {
			return newErr(ErrInvalidKey, "Invalid rotationKey: %s", k)
		}
	}
	if len(o.Services) > MaxServices {
		return newErr(ErrLimit, "To many service entries (max %d)", MaxServices)
	}
	for _, s := range o.Services {
		if jsLen(s.ID) > MaxIDLength {
			return newErr(ErrLimit, "Service id too long (max %d): %s", MaxIDLength, s.ID)
		}
		if jsLen(s.Type) > MaxServiceTypeLength {
			return newErr(ErrLimit, "Service type too long (max %d)", MaxServiceTypeLength)
		}
		if jsLen(s.Endpoint) > MaxServiceEndpointLength {
			return newErr(ErrLimit, "Service endpoint too long (max %d)", MaxServiceEndpointLength)
		}
	}
	if len(o.VerificationMethods) > MaxVerificationMethods {
		return newErr(ErrLimit, "Too many Verification Method entries (max %d)", MaxVerificationMethods)
	}
	for _, vm := range o.VerificationMethods {
		if jsLen(vm.ID) > MaxIDLength {
			return newErr(ErrLimit, "Verification Method id too long (max %d): %s", MaxIDLength, vm.ID)
		}
		if jsLen(vm.Key) > MaxVerificationMethodKeyLen {
			return newErr(ErrLimit, "Verification Method key too long (max %d): %s", MaxVerificationMethodKeyLen, vm.Key)
		}
		if err := CheckVerificationMethodKey(vm.Key); err != nil {
			return newErr(ErrInvalidKey, "Invalid verificationMethod key: %s", vm.Key)
		}
	}
	return nil
}

// CheckRateLimit applies the per-DID rate limit to a submission at now: at
// most RateLimitHour non-nullified ops in the last hour, RateLimitDay in the
// last day and RateLimitWeek in the last week, counting the new one. A
// recovery op that nullifies something is exempt: callers check
// Applied.Nullified before calling.
func CheckRateLimit(s *State, now time.Time) error {
	hourAgo := now.Add(-time.Hour)
	dayAgo := now.Add(-24 * time.Hour)
	weekAgo := now.Add(-7 * 24 * time.Hour)
	var hour, day, week int
	for _, op := range s.Ops {
		if op.CreatedAt.After(weekAgo) {
			if week++; week >= RateLimitWeek {
				return newErr(ErrRateLimit, "To many operations within last week (max %d)", RateLimitWeek)
			}
		}
		if op.CreatedAt.After(dayAgo) {
			if day++; day >= RateLimitDay {
				return newErr(ErrRateLimit, "To many operations within last day (max %d)", RateLimitDay)
			}
		}
		if op.CreatedAt.After(hourAgo) {
			if hour++; hour >= RateLimitHour {
				return newErr(ErrRateLimit, "To many operations within last hour (max %d)", RateLimitHour)
			}
		}
	}
	return nil
}
